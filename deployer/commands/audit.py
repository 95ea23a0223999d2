"""``<deploy_dir>/audit.log``: append one JSON line, read the newest lines.

The line travels on stdin, never in the command line, and is appended by
``dd`` with ``oflag=append`` (``O_APPEND``) and ``iflag=fullblock``, so it
lands in one ``write`` at the end of the file however the SSH channel
chunks it: two runs appending at once cannot interleave their lines.
"""

from __future__ import annotations

import posixpath

from deployer.commands.base import Command, Script

LOG = "audit.log"

_APPEND = ('exec dd of="$1" oflag=append conv=notrunc iflag=fullblock bs=1M count=1 '
           "status=none")
_READ = '[ -f "$1" ] || exit 0\nexec tail -n "$2" -- "$1"'


def log_path(deploy_dir: str) -> str:
    return posixpath.join(deploy_dir, LOG)


def append(deploy_dir: str, line: str) -> Command:
    """Append ``line`` (one JSON object, no newline inside) to the audit log."""
    if "\n" in line or len(line) >= 1024 * 1024:
        raise ValueError("an audit line is one line shorter than 1 MiB")
    return Script(_APPEND, args=(log_path(deploy_dir),), stdin=line + "\n",
                  description="append to the audit log").command()


def read(deploy_dir: str, lines: int) -> Command:
    """The last ``lines`` lines of the audit log (nothing when there is none)."""
    return Script(_READ, args=(log_path(deploy_dir), str(lines)),
                  description="read the audit log").command()
