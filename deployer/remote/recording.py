"""Executors that record: what ``plan`` prints and what tests compare.

:class:`Recorder` wraps a real executor and notes every call before passing
it on (plan equals ship, against a real sshd). :class:`ScriptedExecutor`
touches no host at all: it answers each command from a script of host facts
(``plan`` runs the ship state machine against it; unit tests script failures).
Both note calls as :class:`Call` values into a list the caller may share with
other recorders (the plan's step events go into the same list, in order).
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from deployer.commands.base import Command
from deployer.errors import HostError
from deployer.remote.base import ExecStats, Executor, LineSink, Result, Wrapper


@dataclass(frozen=True)
class Call:
    """One thing an executor was asked to do."""

    kind: Literal["run", "upload", "stream", "stream_in"]
    command: Command | None = None  # run, stream, stream_in
    path: str = ""  # upload
    mode: int = 0  # upload
    size: int = 0  # upload

    @property
    def name(self) -> str:
        """What tests match on: the command's description, or ``upload PATH``."""
        if self.command is not None:
            return self.command.description or self.command.argv[0]
        return f"upload {self.path}"

    def display(self) -> str:
        """The line ``plan`` prints (secrets on stdin shown masked)."""
        if self.command is not None:
            line = self.command.display()
            return f"{line} < release.tar" if self.kind == "stream_in" else line
        return shlex.join(["sftp-put", self.path, f"{self.mode:04o}"])


class Recorder(Wrapper):
    """``inner``, with every call noted in ``calls`` first."""

    def __init__(self, inner: Executor, calls: list[object] | None = None) -> None:
        super().__init__(inner)
        self.calls: list[object] = calls if calls is not None else []

    def run(self, command: Command, *, check: bool = True, timeout: float | None = None) -> Result:
        self.calls.append(Call("run", command))
        return self.inner.run(command, check=check, timeout=timeout)

    def upload(self, data: bytes, path: str, *, mode: int = 0o644) -> None:
        self.calls.append(Call("upload", path=path, mode=mode, size=len(data)))
        self.inner.upload(data, path, mode=mode)

    def stream(self, command: Command, on_line: LineSink, *,
               cancel: threading.Event | None = None) -> int:
        self.calls.append(Call("stream", command))
        return self.inner.stream(command, on_line, cancel=cancel)

    def stream_in(self, command: Command, chunks: Iterable[bytes], *, check: bool = True,
                  timeout: float | None = None) -> Result:
        self.calls.append(Call("stream_in", command))
        return self.inner.stream_in(command, chunks, check=check, timeout=timeout)


Answer = Callable[[Command], "tuple[int, str]"]


class Answers:
    """A table of scripted outputs: ``{description: [(exit_code, stdout), ...]}``.
    Each call of a command takes the next answer; the last one repeats.
    Commands not in the table exit 0 with no output. An answer may be an
    exception instance instead, which is raised (an unreachable host)."""

    def __init__(self, table: Mapping[str, Sequence[tuple[int, str] | BaseException]]) -> None:
        self._table = {k: list(v) for k, v in table.items()}

    def __call__(self, command: Command) -> tuple[int, str]:
        queue = self._table.get(command.description)
        if not queue:
            return 0, ""
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer


class ScriptedExecutor:
    """An executor for no host: ``answer`` gives each command's exit code
    and stdout; uploads and streams are only noted. A result outside the
    command's ``ok_codes`` raises with ``check`` like a real executor."""

    def __init__(self, host: str, answer: Answer, calls: list[object] | None = None,
                 before: Callable[[Call], None] | None = None) -> None:
        self.host = host
        self._answer = answer
        self.calls: list[object] = calls if calls is not None else []
        self._before = before
        self._stats = ExecStats()  # no connection: no host

    def _note(self, call: Call) -> None:
        if self._before is not None:
            self._before(call)
        self.calls.append(call)

    def connect(self) -> object:
        return None

    def run(self, command: Command, *, check: bool = True, timeout: float | None = None) -> Result:
        self._note(Call("run", command))
        return self._answered(command, check)

    def _answered(self, command: Command, check: bool) -> Result:
        self._stats.commands += 1
        code, out = self._answer(command)
        res = Result(command, code, stdout=out)
        if check and not res.ok:
            raise HostError(self.host, command.description or command.argv[0],
                            f"exit code {code}")
        return res

    def upload(self, data: bytes, path: str, *, mode: int = 0o644) -> None:
        self._note(Call("upload", path=path, mode=mode, size=len(data)))
        self._stats.bytes_uploaded += len(data)

    def stream(self, command: Command, on_line: LineSink, *,
               cancel: threading.Event | None = None) -> int:
        self._note(Call("stream", command))
        self._stats.commands += 1
        code, out = self._answer(command)
        for line in out.splitlines():
            on_line(line)
        return code

    def stream_in(self, command: Command, chunks: Iterable[bytes], *, check: bool = True,
                  timeout: float | None = None) -> Result:
        """Noted, answered like :meth:`run`; ``chunks`` is never read (a plan
        of a large tree reads no file)."""
        self._note(Call("stream_in", command))
        return self._answered(command, check)

    def stats(self) -> ExecStats:
        return ExecStats(**vars(self._stats))

    def close(self) -> None:
        pass
