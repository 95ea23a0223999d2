"""Pure command builders: functions that return :class:`Command` values.

Nothing here touches a host. The executor in ``deployer.remote`` runs these,
``plan`` prints them, and unit tests assert their exact argv.
"""

from deployer.commands.base import Command, Script

__all__ = ["Command", "Script"]
