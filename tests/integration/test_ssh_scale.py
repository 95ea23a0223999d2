"""Connections at scale, against real sshd servers (issue 19): targets behind
one bastion share ONE connection to it (direct-tcpip channels over it), and
handshakes an sshd resets because of ``MaxStartups`` are retried, with the
number in flight bounded by ``rollout.max_connecting``."""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deployer.commands.base import cmd
from deployer.config.inventory import Host
from deployer.remote import ssh
from deployer.remote.executor import SSHExecutor
from deployer.remote.ssh import JUMPS, run_scope

from .conftest import SSHD, SSHServer, _free_port

MakeHost = Callable[..., Host]


def accepted(log: Path) -> int:
    """Authenticated SSH connections the server has logged so far."""
    return log.read_text(errors="replace").count("Accepted publickey")


def connect_all(hosts: list[Host]) -> list[SSHExecutor]:
    """Open every host's connection at once (threads), as a run does."""
    execs = [SSHExecutor(h, ssh_config=None) for h in hosts]
    errors: list[BaseException] = []

    def one(ex: SSHExecutor) -> None:
        try:
            ex.connect()
        except BaseException as e:  # collected and re-raised below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(ex,)) for ex in execs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for ex in execs:
            ex.close()
        raise errors[0]
    return execs


def test_targets_share_one_bastion_connection(
    make_host: MakeHost, sshd: SSHServer, no_agent: None, caplog: pytest.LogCaptureFixture
) -> None:
    # The server is its own bastion: each target is a direct-tcpip channel
    # from it to itself. Four targets, one run: the server must see 1 + 4
    # authenticated connections (not 4 + 4), and every target's jump is the
    # same paramiko connection.
    caplog.set_level("DEBUG", "deployer.remote")
    log = sshd.dir / "sshd.log"
    hosts = [make_host(name=f"t{i}", proxy_jump=f"root@127.0.0.1:{sshd.port}")
             for i in range(4)]
    before, opened = accepted(log), JUMPS.opened
    with run_scope(4):
        execs = connect_all(hosts)
        try:
            jumps = {id(ex.connect().jumps[0]) for ex in execs}
            assert len(jumps) == 1
            for ex in execs:
                assert ex.run(cmd("echo", "hi")).stdout == "hi\n"
            bastion = execs[0].connect().jumps[0].get_transport()
            assert bastion is not None and bastion.is_active()
        finally:
            for ex in execs:
                ex.close()
        # Every target closed: the run still keeps the bastion for later hosts...
        assert bastion.is_active()
        later = connect_all([make_host(name="t-late", proxy_jump=f"root@127.0.0.1:{sshd.port}")])
        assert later[0].connect().jumps[0].get_transport() is bastion
        later[0].close()
    # ...and closes it when the run ends.
    assert not bastion.is_active()
    assert JUMPS.opened == opened + 1
    assert len(JUMPS) == 0
    _wait_for(lambda: accepted(log) - before == 1 + 5)
    assert caplog.text.count("opened jump connection") == 1


def test_without_a_run_the_bastion_closes_with_its_last_target(
    make_host: MakeHost, sshd: SSHServer, no_agent: None
) -> None:
    hosts = [make_host(name=f"u{i}", proxy_jump=f"root@127.0.0.1:{sshd.port}")
             for i in range(2)]
    execs = connect_all(hosts)
    bastion = execs[0].connect().jumps[0].get_transport()
    assert bastion is not None
    execs[0].close()
    assert bastion.is_active()  # still used by the other target
    execs[1].close()
    assert not bastion.is_active()
    assert len(JUMPS) == 0


def test_an_unreachable_bastion_fails_each_host_once_in_a_run(
    make_host: MakeHost, no_agent: None
) -> None:
    # One attempt per jump host per run: the others get the same reason,
    # each in its own name, without dialling again.
    port = _free_port()  # nothing listens there
    hosts = [make_host(name=f"v{i}", proxy_jump=f"root@127.0.0.1:{port}") for i in range(3)]
    with run_scope():
        errors = []
        for h in hosts:
            with pytest.raises(ssh.UnreachableError) as e:
                SSHExecutor(h, ssh_config=None).connect()
            errors.append(e.value)
    assert [e.host for e in errors] == ["v0", "v1", "v2"]
    assert all(f"connection refused by 127.0.0.1:{port}" in e.message for e in errors)
    assert errors[2].message.startswith("v2: ")


# -- MaxStartups -------------------------------------------------------------


@pytest.fixture
def strict_sshd(sshd: SSHServer, tmp_path: Path) -> Iterator[tuple[int, Path, str]]:
    """A second sshd on the same keys that drops every unauthenticated
    connection beyond 2 (``MaxStartups 2``): (port, log, known_hosts)."""
    port = _free_port()
    kh = tmp_path / "strict_known_hosts"
    kh.write_text(sshd.known_hosts_line(f"[127.0.0.1]:{port}"))
    conf = (sshd.dir / "sshd_config").read_text()
    conf = re.sub(r"(?m)^Port \d+$", f"Port {port}", conf)
    conf = re.sub(r"(?m)^MaxStartups .*$", "MaxStartups 2", conf)
    conf = re.sub(r"(?m)^PidFile .*$", f"PidFile {sshd.dir}/strict.pid", conf)
    cfg = sshd.dir / "strict_config"
    cfg.write_text(conf)
    log = sshd.dir / "strict.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stdout=out, stderr=out)
    try:
        _wait_for(lambda: _listening(port))
        yield port, log, str(kh)
    finally:
        proc.terminate()
        proc.wait(5)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _wait_for(cond: Callable[[], bool], timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        time.sleep(0.05)


def test_handshakes_reset_by_maxstartups_are_retried(
    make_host: MakeHost, strict_sshd: tuple[int, Path, str], no_agent: None,
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 8 handshakes at once against MaxStartups 2: sshd drops the others at
    # once; each is retried with backoff until all 8 are connected.
    caplog.set_level("DEBUG", "deployer.remote")
    monkeypatch.setattr(ssh, "HANDSHAKE_ATTEMPTS", 12)
    port, log, kh = strict_sshd
    hosts = [make_host(name=f"m{i}", port=port, known_hosts=kh) for i in range(8)]
    with run_scope(8):
        execs = connect_all(hosts)
    try:
        assert all(ex.connections_opened == 1 for ex in execs)
    finally:
        for ex in execs:
            ex.close()
    assert "past MaxStartups" in log.read_text()  # sshd did drop some
    assert "reset the SSH handshake (attempt 1 of 12; sshd MaxStartups?)" in caplog.text


def test_max_connecting_bounds_the_handshakes_in_flight(
    make_host: MakeHost, strict_sshd: tuple[int, Path, str], no_agent: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The same 8 hosts with max_connecting 2: never more than 2 handshakes at
    # once, whatever the number of threads asking.
    caplog.set_level("DEBUG", "deployer.remote")
    port, _, kh = strict_sshd
    hosts = [make_host(name=f"g{i}", port=port, known_hosts=kh) for i in range(8)]
    ssh.HANDSHAKES.peak = 0
    with run_scope(2):
        execs = connect_all(hosts)
    for ex in execs:
        ex.close()
    assert ssh.HANDSHAKES.peak == 2


def test_a_shared_bastion_with_an_unknown_key_is_refused_for_every_target(
    make_host: MakeHost, sshd: SSHServer, tmp_path: Path, no_agent: None
) -> None:
    # Sharing the bastion connection must not share trust: the bastion's key
    # is checked against known_hosts once, and its refusal reaches every
    # target behind it; none is connected through an unverified bastion.
    from deployer.remote.hostkeys import HostKeyError

    kh = tmp_path / "kh"
    kh.write_text(sshd.known_hosts_line(f"[localhost]:{sshd.port}"))  # the target only
    jump = f"root@127.0.0.1:{sshd.port}"
    hosts = [make_host(name=f"k{i}", address="localhost", known_hosts=str(kh),
                       proxy_jump=jump) for i in range(3)]
    with run_scope():
        for h in hosts:
            with pytest.raises(HostKeyError) as e:
                SSHExecutor(h, ssh_config=None).connect()
            assert f"unknown host key for [127.0.0.1]:{sshd.port}" in str(e.value)
    assert len(JUMPS) == 0
    assert kh.read_text() == sshd.known_hosts_line(f"[localhost]:{sshd.port}")  # nothing added
