"""Early connections and the early first command, against a real sshd.

The ship opens the first batch's connections and reads each host's state
while the images are staged. These tests pin the promises that makes: the
early command runs once on the host, its result is what the job gets when it
asks for that command, the job still uses the one connection, and a host
whose handshake failed early fails in the job like any unreachable host.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deployer.commands.base import Command, Script, cmd
from deployer.config.inventory import Host
from deployer.remote.executor import SSHExecutor
from deployer.remote.preconnect import Preconnected
from deployer.remote.ssh import UnreachableError

MakeHost = Callable[..., Host]


def _factory(host: Host) -> SSHExecutor:
    return SSHExecutor(host, ssh_config=None)


@contextlib.contextmanager
def preconnected(hosts: list[Host], first: Command | None) -> Iterator[Preconnected]:
    pre = Preconnected(hosts, _factory, first)
    try:
        yield pre
    finally:
        pre.close()  # closes what no test took


def _counting_read(log: Path) -> Script:
    """Stands in for the state read; appends a line per run so the test can
    count how often it ran on the host."""
    return Script('echo ran >> "$1"; echo "state of $1"', args=(str(log),))


def test_early_command_runs_once_and_its_result_reaches_the_job(
    make_host: MakeHost, no_agent: None, tmp_path: Path
) -> None:
    log = tmp_path / "ran.log"
    first = _counting_read(log).command()
    host = make_host(name="early-1")
    with preconnected([host], first) as pre:
        ex = pre.executor(host)
        res = ex.run(first)
        assert res.stdout == f"state of {log}\n"
        assert log.read_text() == "ran\n"  # not run a second time for the job
        assert ex.run(first).stdout == f"state of {log}\n"  # asked again: runs again
        assert log.read_text() == "ran\nran\n"
        assert ex.run(cmd("echo", "later")).stdout == "later\n"
        assert ex.stats().connections_opened == 1
        ex.close()


def test_other_command_first_waits_for_the_early_one(
    make_host: MakeHost, no_agent: None, tmp_path: Path
) -> None:
    """The connection is never shared: a job whose first command is another
    one waits until the early command is done, then runs its own."""
    log = tmp_path / "ran.log"
    first = Script('sleep 0.3; echo ran >> "$1"', args=(str(log),)).command()
    host = make_host(name="early-2")
    with preconnected([host], first) as pre:
        ex = pre.executor(host)
        assert ex.run(cmd("cat", str(log))).stdout == "ran\n"
        ex.close()


def test_failed_early_command_is_run_again_by_the_job(
    make_host: MakeHost, no_agent: None, tmp_path: Path
) -> None:
    """A result that is not ok is not handed over: the job runs the command
    itself, so its error carries the job's step like any other failure."""
    flag, log = tmp_path / "ok", tmp_path / "ran.log"
    # The log line is written after the flag is checked: once it exists,
    # the early run has failed for sure.
    first = Script('[ -e "$1" ] && r=0 || r=7; echo ran >> "$2"; [ "$r" = 0 ] || exit 7; '
                   'echo fine', args=(str(flag), str(log))).command()
    host = make_host(name="early-3")
    with preconnected([host], first) as pre:
        deadline = time.monotonic() + 20
        while not log.exists() and time.monotonic() < deadline:  # the early run failed
            time.sleep(0.05)
        flag.write_text("")
        ex = pre.executor(host)
        assert ex.run(first).stdout == "fine\n"
        assert log.read_text() == "ran\nran\n"  # the failed result was not handed over
        ex.close()


def test_unreachable_host_fails_in_the_job(
    make_host: MakeHost, no_agent: None, tmp_path: Path
) -> None:
    host = make_host(name="early-4", port=1, connect_timeout=2.0)
    with preconnected([host], _counting_read(tmp_path / "x").command()) as pre:
        ex = pre.executor(host)
        with pytest.raises(UnreachableError):
            ex.run(cmd("true"))
        ex.close()
    assert not (tmp_path / "x").exists()


def test_hosts_not_started_early_get_a_fresh_executor(
    make_host: MakeHost, no_agent: None, tmp_path: Path
) -> None:
    early, late = make_host(name="early-5"), make_host(name="late-5")
    with preconnected([early], None) as pre:
        ex = pre.executor(late)
        assert isinstance(ex, SSHExecutor)
        assert ex.connections_opened == 0  # lazy, opened on first use
        assert ex.run(cmd("echo", "hi")).stdout == "hi\n"
        ex.close()


def test_close_does_not_wait_for_a_handshake_under_way(
    make_host: MakeHost, no_agent: None
) -> None:
    """The image stage failed while a host was still handshaking: close()
    must return at once (the user's error message waits for it), and the
    connection is closed when the handshake ends."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True).start()
    host = make_host(name="early-6", port=server.getsockname()[1], connect_timeout=30.0)
    ex = _factory(host)
    pre = Preconnected([host], lambda h: ex, None)
    deadline = time.monotonic() + 10
    while not accepted and time.monotonic() < deadline:  # TCP up, no SSH banner yet
        time.sleep(0.05)
    assert accepted, "the early connect never reached the server"
    handshake = pre._futures["early-6"]
    pre.close()
    assert not handshake.done()  # close() did not wait for it
    accepted[0].close()  # the server hangs up: the handshake fails at once
    server.close()
    handshake.result(timeout=10)
    deadline = time.monotonic() + 5  # the done-callback runs right after
    while not getattr(ex, "_closed") and time.monotonic() < deadline:
        time.sleep(0.02)
    with pytest.raises(RuntimeError, match="executor is closed"):  # closed once it ended
        ex.run(cmd("true"))
