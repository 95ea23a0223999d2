"""Open the first hosts' SSH connections while the image stage runs, and
send each its first, read-only command.

A ship first resolves its images (build and push, or ask the registry), and
only then starts the hosts. The SSH handshakes do not depend on the images,
and neither does the ship's first command (reading the current release), so
both can overlap that stage: on a no-op ship of a few hosts the stage, the
handshakes and the state read were each a large share of the whole run
(bench/results).

Still one connection per host per command: the executor opened here is the
one the host's job gets, and the early command's result is handed to the job
when it runs that same command, in place of running it again (so it is
counted once, where the job asks for it). A failed handshake or early command
is not reported here: the job runs the command for real and fails in its
report exactly as if it had connected late. Only read-only commands may be
sent early: the job may never ask for them (say, the image stage failed).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future

from deployer.commands.base import Command
from deployer.config.inventory import Host
from deployer.remote.base import Executor, LineSink, Result, Wrapper
from deployer.remote.ssh import DEFAULT_MAX_CONNECTING, run_scope


def _open(ex: Executor, first: Command | None) -> Result | None:
    try:
        ex.connect()
        return ex.run(first, check=False) if first is not None else None
    except Exception:  # kept by the executor, raised on first use
        return None


class _Prefetched(Wrapper):
    """``inner``, with ``first``'s early result given to the first call that
    runs an equal command. A result that is not ok is dropped and the command
    runs again, so errors carry the job's step name as usual."""

    def __init__(self, inner: Executor, first: Command | None,
                 early: Future[Result | None]) -> None:
        super().__init__(inner)
        self._first = first
        self._early: Future[Result | None] | None = early

    def _settle(self) -> Result | None:
        """Wait for the early command (the connection is not shared while it
        runs), once; later calls get None."""
        early, self._early = self._early, None
        return early.result() if early is not None else None

    def connect(self) -> object:
        self._settle()
        return self.inner.connect()

    def run(self, command: Command, *, check: bool = True, timeout: float | None = None) -> Result:
        res = self._settle()
        if res is not None and res.ok and command == self._first:
            return res
        return self.inner.run(command, check=check, timeout=timeout)

    def upload(self, data: bytes, path: str, *, mode: int = 0o644) -> None:
        self._settle()
        self.inner.upload(data, path, mode=mode)

    def stream(self, command: Command, on_line: LineSink, *,
               cancel: threading.Event | None = None) -> int:
        self._settle()
        return self.inner.stream(command, on_line, cancel=cancel)

    def stream_in(self, command: Command, chunks: Iterable[bytes], *, check: bool = True,
                  timeout: float | None = None) -> Result:
        self._settle()
        return self.inner.stream_in(command, chunks, check=check, timeout=timeout)

    def close(self) -> None:
        self._settle()
        self.inner.close()


class Preconnected:
    """Executors for ``hosts``, connecting in the background from now on and
    then running ``first`` (a read-only command, or None).

    Use :meth:`executor` as the run's executor factory (hosts not started
    here get a fresh executor from ``factory``), and :meth:`close` when the
    run is over, to close the connections no job took (say, the image stage
    failed)."""

    def __init__(self, hosts: list[Host], factory: Callable[[Host], Executor],
                 first: Command | None = None, *,
                 max_connecting: int = DEFAULT_MAX_CONNECTING) -> None:
        # The run's scope starts here, before the first handshake: the jump
        # hosts these connections open stay for the hosts that start later.
        self._scope = contextlib.ExitStack()
        self._scope.enter_context(run_scope(max_connecting))
        self._factory = factory
        self._first = first
        self._execs: dict[str, Executor] = {h.name: factory(h) for h in hosts}
        self._futures: dict[str, Future[Result | None]] = {
            name: _in_background(name, ex, first) for name, ex in self._execs.items()
        }

    def executor(self, host: Host) -> Executor:
        ex = self._execs.pop(host.name, None)
        if ex is None:
            return self._factory(host)
        return _Prefetched(ex, self._first, self._futures[host.name])

    def close(self) -> None:
        """Close the connections no job took, without waiting for handshakes
        still under way: an unreachable host would otherwise hold back the
        run's error message for its whole connect timeout. Such a connection
        is closed when its handshake ends. Ends the run's scope
        (:func:`deployer.remote.ssh.run_scope`)."""
        for name, ex in self._execs.items():
            self._futures[name].add_done_callback(_closer(ex))
        self._execs.clear()
        self._scope.close()


def _in_background(name: str, ex: Executor, first: Command | None) -> Future[Result | None]:
    """Run :func:`_open` in a daemon thread: a process that is done (say, its
    image stage failed) exits without waiting for a slow handshake."""
    fut: Future[Result | None] = Future()

    def work() -> None:
        res: Result | None = None
        try:
            res = _open(ex, first)
        finally:  # always settled: a job waits on it before using ``ex``
            fut.set_result(res)

    threading.Thread(target=work, daemon=True, name=f"preconnect-{name}").start()
    return fut


def _closer(ex: Executor) -> Callable[[Future[Result | None]], None]:
    def close(_done: Future[Result | None]) -> None:
        with contextlib.suppress(Exception):  # closing a dead connection
            ex.close()

    return close
