"""Channels closed while data is in flight, against a real sshd (issue 19).

OpenSSH drops a whole connection when it gets data for a channel it has
already freed ("data packet referred to nonexistent channel"). Through a
shared bastion that connection carries every target, so a DATA racing a
CLOSE on one target's direct-tcpip channel took 34-49 of 100 hosts down in
the scale bench (bench/results).
"""

from __future__ import annotations

import random
import select
import threading
from collections.abc import Callable
from typing import Any

import pytest

from deployer.commands.base import Command
from deployer.config.inventory import Host
from deployer.remote import ssh
from deployer.remote.executor import SSHExecutor

from .conftest import SSHServer

MakeHost = Callable[..., Host]


def test_closing_channels_while_writing_keeps_the_shared_connection(
    make_host: MakeHost, sshd: SSHServer, no_agent: None
) -> None:
    # What a bastion's Transport sees: many direct-tcpip channels at once,
    # each written to by one thread while another closes it (as a target's
    # transport does while it is closed), and the far end hanging up on its
    # own (sshd reading a bogus client). Without the fix sshd disconnected
    # this connection within the first round.
    conn = ssh.connect(make_host(), ssh_config=None)
    transport = conn.transport
    rng = random.Random(19)

    def one(delay: float) -> None:
        ch = transport.open_channel("direct-tcpip", ("127.0.0.1", sshd.port),
                                    ("127.0.0.1", 0), timeout=30)
        closer = threading.Timer(delay, ch.close)
        closer.start()
        try:
            ch.sendall(b"SSH-2.0-not-really\r\n")
            while True:
                ch.sendall(b"\0" * 4096)
        except OSError:
            pass  # closed: by the timer, or by the far end
        closer.join()

    try:
        for _ in range(5):
            threads = [threading.Thread(target=one, args=(rng.uniform(0, 0.3),))
                       for _ in range(30)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert transport.is_active()
        # ...and the connection still works.
        chan = transport.open_session(timeout=30)
        chan.exec_command("echo alive")
        assert chan.makefile().read() == b"alive\n"
        chan.close()
    finally:
        conn.close()


def test_a_command_that_exits_before_reading_its_stdin_reports_its_exit_code(
    make_host: MakeHost, no_agent: None
) -> None:
    # 8 MB of stdin is more than the channel's window: `exit 3` ends and its
    # channel closes while most of it is still to send. That is the
    # command's result (exit 3), not an internal "Socket is closed" error.
    with SSHExecutor(make_host(), ssh_config=None) as ex:
        r = ex.run(Command(("sh", "-c", "exit 3"), stdin="y" * 8 * 2**20), check=False)
        assert r.exit_code == 3
        assert ex.run(Command(("echo", "next"))).stdout == "next\n"


def test_the_wait_between_eof_and_exit_status_does_not_spin(
    make_host: MakeHost, no_agent: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # sshd sends EOF when the command closes its output and the exit status
    # when it exits. paramiko's pipe stays readable after EOF, so a select on
    # it returned at once and the command's wait became a busy loop: about
    # 170 turns per command in a loaded 200-host ship, most of its CPU.
    me = threading.get_ident()
    turns = 0
    real = select.select

    def counting(*args: Any) -> Any:
        nonlocal turns
        if threading.get_ident() == me:
            turns += 1
        return real(*args)

    monkeypatch.setattr(select, "select", counting)
    with SSHExecutor(make_host(), ssh_config=None) as ex:
        r = ex.run(Command(("sh", "-c", "exec >&- 2>&-; sleep 1; exit 4")), check=False)
    assert r.exit_code == 4
    assert turns < 10, f"{turns} selects while waiting 1s for the exit status"
