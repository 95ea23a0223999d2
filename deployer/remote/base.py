"""The executor contract between deploy logic and transports.

Deploy logic (bootstrap, ship, rollback, logs) only sees :class:`Executor`;
:class:`deployer.remote.executor.SSHExecutor` implements it for real hosts,
and :class:`deployer.remote.recording.ScriptedExecutor` answers from a script
for ``plan`` and unit tests. Wrappers (counting, the early first command,
recording) derive from :class:`Wrapper`, which forwards every method, so a
method added to the protocol is forwarded in one place.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
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


@dataclass
class ExecStats:
    """What one executor did to its host, for the JSON report and bench/."""

    connections_opened: int = 0
    commands: int = 0  # run and streamed commands
    bytes_uploaded: int = 0


LineSink = Callable[[str], None]


class Executor(Protocol):
    """Runs commands on one host over one connection, opened once per run."""

    host: str  # inventory host name, for messages

    def connect(self) -> object:
        """Open the connection now (otherwise the first command opens it).
        Raises :class:`deployer.errors.HostError` when the host is unreachable."""
        ...

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

    def stream(self, command: Command, on_line: LineSink, *,
               cancel: threading.Event | None = None) -> int:
        """Run ``command`` and hand each line of its output (stdout and stderr
        merged) to ``on_line`` as it arrives; return its exit code. Setting
        ``cancel`` ends the command (the channel is closed) and returns -1."""
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

    def stats(self) -> ExecStats:
        """Connections opened, commands run and bytes uploaded so far."""
        ...

    def close(self) -> None: ...


class Wrapper:
    """An executor that forwards everything to ``inner``; subclasses override
    what they add to it."""

    def __init__(self, inner: Executor) -> None:
        self.inner = inner
        self.host = inner.host

    def connect(self) -> object:
        return self.inner.connect()

    def run(self, command: Command, *, check: bool = True, timeout: float | None = None) -> Result:
        return self.inner.run(command, check=check, timeout=timeout)

    def upload(self, data: bytes, path: str, *, mode: int = 0o644) -> None:
        self.inner.upload(data, path, mode=mode)

    def stream(self, command: Command, on_line: LineSink, *,
               cancel: threading.Event | None = None) -> int:
        return self.inner.stream(command, on_line, cancel=cancel)

    def stream_in(self, command: Command, chunks: Iterable[bytes], *, check: bool = True,
                  timeout: float | None = None) -> Result:
        return self.inner.stream_in(command, chunks, check=check, timeout=timeout)

    def stats(self) -> ExecStats:
        return self.inner.stats()

    def close(self) -> None:
        self.inner.close()


class Counting(Wrapper):
    """Counts the commands and uploaded bytes a job asked for (what the JSON
    report shows); connections come from the executor underneath. A command
    the early connection ran for the job counts once, where the job asks."""

    def __init__(self, inner: Executor) -> None:
        super().__init__(inner)
        self.commands = 0
        self.bytes_uploaded = 0

    def run(self, command: Command, *, check: bool = True, timeout: float | None = None) -> Result:
        self.commands += 1
        return self.inner.run(command, check=check, timeout=timeout)

    def upload(self, data: bytes, path: str, *, mode: int = 0o644) -> None:
        self.bytes_uploaded += len(data)
        self.inner.upload(data, path, mode=mode)

    def stream(self, command: Command, on_line: LineSink, *,
               cancel: threading.Event | None = None) -> int:
        self.commands += 1
        return self.inner.stream(command, on_line, cancel=cancel)

    def stream_in(self, command: Command, chunks: Iterable[bytes], *, check: bool = True,
                  timeout: float | None = None) -> Result:
        """One command; every byte streamed counts as uploaded."""
        self.commands += 1

        def counted() -> Iterator[bytes]:
            for chunk in chunks:
                self.bytes_uploaded += len(chunk)
                yield chunk

        return self.inner.stream_in(command, counted(), check=check, timeout=timeout)

    def stats(self) -> ExecStats:
        return ExecStats(self.inner.stats().connections_opened, self.commands,
                         self.bytes_uploaded)
