"""The apply marker: ``<deploy_dir>/.applying``, what a killed run leaves.

Written (holding the release id) right before a ``compose up`` that changes
what the host runs, and removed once the host is consistent again: after
``current`` was switched to the new release, or the release ``current``
points at was brought back up healthy. A marker found later means a run
stopped in between (``kill -9`` during ``compose up`` or the health wait):
the host may run containers of a release ``current`` does not point at, so
the next ``ship`` must not call it unchanged (:mod:`deployer.deploy.recovery`).
The state read (:func:`deployer.commands.release.read_state`) reports it.
"""

from __future__ import annotations

import posixpath

from deployer.commands.base import Command, Script
from deployer.commands.release import check_release_id

MARKER = ".applying"

_MARK = """
set -e
printf '%s\\n' "$2" > "$1/.applying.tmp"
mv -f -- "$1/.applying.tmp" "$1/.applying"
""".strip()


def mark_applying(deploy_dir: str, release: str) -> Command:
    """Note that ``release`` is being started (before its ``compose up``)."""
    check_release_id(release)
    return Script(_MARK, args=(deploy_dir, release),
                  description=f"mark {release} as being applied").command()


def clear_applying(deploy_dir: str) -> Command:
    """The host is consistent again: what runs is what ``current`` says."""
    return Command(("rm", "-f", "--", posixpath.join(deploy_dir, MARKER)),
                   description="clear the apply marker")
