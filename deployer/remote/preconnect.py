"""Open the first hosts' SSH connections while the image stage runs.

A ship first resolves its images (build and push, or ask the registry), and
only then starts the hosts. The SSH handshakes do not depend on the images, so
they can overlap that stage: on a no-op ship of a few hosts the stage and the
handshakes were each a large share of the whole run (bench/results).

Still one connection per host per command: the executor opened here is the
one the host's job gets. A failed handshake is not reported here: the
executor keeps the error and raises it on first use, so the host fails in
its report exactly as if it had connected late.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from deployer.config.inventory import Host
from deployer.remote.base import Executor


def _open(ex: Executor) -> None:
    connect = getattr(ex, "connect", None)
    if connect is None:
        return
    with contextlib.suppress(Exception):  # kept by the executor, raised on first use
        connect()


class Preconnected:
    """Executors for ``hosts``, connecting in the background from now on.

    Use :meth:`executor` as the run's executor factory (hosts not started
    here get a fresh executor from ``factory``), and :meth:`close` when the
    run is over, to close the connections no job took (say, the image stage
    failed)."""

    def __init__(self, hosts: list[Host], factory: Callable[[Host], Executor]) -> None:
        self._factory = factory
        self._execs: dict[str, Executor] = {h.name: factory(h) for h in hosts}
        self._futures: dict[str, Future[None]] = {}
        if self._execs:
            pool = ThreadPoolExecutor(max_workers=len(self._execs),
                                      thread_name_prefix="preconnect")
            self._futures = {n: pool.submit(_open, ex) for n, ex in self._execs.items()}
            pool.shutdown(wait=False)

    def executor(self, host: Host) -> Executor:
        ex = self._execs.pop(host.name, None)
        if ex is None:
            return self._factory(host)
        self._futures[host.name].result()  # the handshake is over, one way or the other
        return ex

    def close(self) -> None:
        for name, ex in list(self._execs.items()):
            with contextlib.suppress(Exception):
                self._futures[name].result()
                ex.close()
        self._execs.clear()
