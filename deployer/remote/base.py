"""The executor contract between deploy logic and transports.

Deploy logic (bootstrap, ship, rollback) only sees :class:`Executor`; the SSH
executor implements it for real hosts, and a recording executor implements it
for ``plan`` and unit tests of orchestration.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from deployer.commands.base import Command


@dataclass
class Result:
    """What one remote command did."""

    command: Command
    exit_code: int
    stdout: str = ""
    stderr: str = field(default="", repr=False)
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_code in self.command.ok_codes


class Executor(Protocol):
    """Runs commands on one host over one connection, opened once per run."""

    host: str  # inventory host name, for messages

    def run(self, command: Command, *, check: bool = True, timeout: float | None = None) -> Result:
        """Run ``command``. With ``check``, a result not in ``ok_codes`` raises
        :class:`deployer.errors.HostError` naming the host and the step, with
        the (masked) tail of stderr."""
        ...

    def upload(self, data: bytes, path: str, *, mode: int = 0o644) -> None:
        """Write ``data`` to ``path`` atomically (temporary name, then rename)
        with ``mode``. The parent directory must exist and be writable by the
        SSH user."""
        ...

    def stream_in(
        self, command: Command, chunks: Iterable[bytes], *, check: bool = True,
        timeout: float | None = None,
    ) -> Result:
        """Run ``command`` with ``chunks`` streamed to its standard input (a
        release tar: binary, possibly large, produced while it is sent).
        ``check`` and ``timeout`` as for :meth:`run`. An exception raised by
        ``chunks`` closes the command's stdin unfinished and propagates."""
        ...

    def close(self) -> None: ...
