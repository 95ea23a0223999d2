"""The pool over real SSH connections: hosts run concurrently, and one
unreachable host fails alone."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

from deployer.commands.base import cmd
from deployer.config.inventory import Host
from deployer.remote.executor import SSHExecutor
from deployer.remote.pool import run_parallel
from deployer.remote.ssh import UnreachableError

MakeHost = Callable[..., Host]


def test_pool_runs_hosts_in_parallel_and_isolates_failure(
    make_host: MakeHost, no_agent: None
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    hosts = [make_host(name=f"web-{i}") for i in range(4)]
    hosts.insert(2, make_host(name="dead", port=dead_port))

    lock = threading.Lock()
    running = [0]
    peak = [0]

    def step(host: Host) -> str:
        with SSHExecutor(host, ssh_config=None) as ex:
            ex.connect()
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            try:
                # Long enough that hosts overlap when run in parallel.
                return ex.run(cmd("sh", "-c", "sleep 0.4; hostname >/dev/null; echo done")).stdout
            finally:
                with lock:
                    running[0] -= 1

    outcomes = run_parallel(hosts, step, max_parallel=3)
    assert [o.item.name for o in outcomes] == ["web-0", "web-1", "dead", "web-2", "web-3"]
    assert [o.ok for o in outcomes] == [True, True, False, True, True]
    assert all(o.value == "done\n" for o in outcomes if o.ok)
    err = outcomes[2].error
    assert isinstance(err, UnreachableError)
    assert str(err).startswith("dead: unreachable (connection refused")
    # Overlap measured, not wall-clock: several sessions were open at once, never > 3.
    assert 2 <= peak[0] <= 3
