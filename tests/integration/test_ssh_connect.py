"""Connecting to a real sshd: host keys, authentication, reachability,
ssh_config and jump hosts."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import paramiko
import pytest

from deployer.commands.base import cmd
from deployer.config.inventory import Host
from deployer.errors import HostError
from deployer.remote.executor import SSHExecutor
from deployer.remote.hostkeys import HostKeyError
from deployer.remote.ssh import UnreachableError

from .conftest import SSHServer

MakeHost = Callable[..., Host]


def server_fingerprint(sshd: SSHServer) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-lf", str(sshd.dir / "host_ed25519.pub")],
        capture_output=True, text=True, check=True,
    ).stdout
    return out.split()[1]  # "256 SHA256:... comment (ED25519)"


def run_hostname(host: Host, **kw: object) -> str:
    with SSHExecutor(host, ssh_config=None, **kw) as ex:  # type: ignore[arg-type]
        return ex.run(cmd("echo", "ok")).stdout.strip()


def test_strict_with_correct_known_hosts_connects(make_host: MakeHost, no_agent: None) -> None:
    assert run_hostname(make_host()) == "ok"


def test_unknown_key_refused_under_strict_with_fingerprint(
    make_host: MakeHost, sshd: SSHServer, tmp_path: Path, no_agent: None
) -> None:
    kh = tmp_path / "empty_known_hosts"
    kh.write_text("")
    with pytest.raises(HostKeyError) as e:
        run_hostname(make_host(known_hosts=str(kh)))
    text = str(e.value)
    assert text.startswith("web-1: host key: unknown host key")
    assert f"ssh-ed25519 {server_fingerprint(sshd)}" in text
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> {kh}" in text
    assert "accept-new" in text
    assert kh.read_text() == ""  # nothing recorded under strict


def test_accept_new_records_key_then_strict_works(
    make_host: MakeHost, sshd: SSHServer, tmp_path: Path, no_agent: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    kh = tmp_path / "sub" / "known_hosts"  # missing directory and file are created
    assert run_hostname(make_host(known_hosts=str(kh), host_key_policy="accept-new")) == "ok"
    assert kh.read_text() == sshd.known_hosts_line()
    assert server_fingerprint(sshd) in caplog.text  # the trust decision is logged
    # Now the key is known: strict accepts it, and a second accept-new adds nothing.
    assert run_hostname(make_host(known_hosts=str(kh))) == "ok"
    assert run_hostname(make_host(known_hosts=str(kh), host_key_policy="accept-new")) == "ok"
    assert kh.read_text() == sshd.known_hosts_line()


@pytest.mark.parametrize("policy", ["strict", "accept-new"])
def test_changed_key_refused_under_both_policies(
    make_host: MakeHost, sshd: SSHServer, tmp_path: Path, policy: str, no_agent: None
) -> None:
    impostor = paramiko.Ed25519Key.from_private_key_file(str(sshd.other_key))
    kh = tmp_path / "known_hosts_changed"
    before = f"[127.0.0.1]:{sshd.port} ssh-ed25519 {impostor.get_base64()}\n"
    kh.write_text(before)
    with pytest.raises(HostKeyError) as e:
        run_hostname(make_host(known_hosts=str(kh), host_key_policy=policy))
    text = str(e.value)
    assert e.value.changed
    assert "web-1: host key:" in text and "CHANGED" in text
    assert server_fingerprint(sshd) in text
    assert f"ssh-keygen -R '[127.0.0.1]:{sshd.port}' -f {kh}" in text
    assert kh.read_text() == before  # never overwritten


def test_hashed_known_hosts_entry(
    make_host: MakeHost, known_hosts: Path, no_agent: None
) -> None:
    subprocess.run(["ssh-keygen", "-H", "-f", str(known_hosts)], check=True,
                   capture_output=True)
    assert known_hosts.read_text().startswith("|1|")
    assert run_hostname(make_host()) == "ok"


def test_wrong_client_key_is_a_clear_auth_error(
    make_host: MakeHost, sshd: SSHServer, no_agent: None
) -> None:
    with pytest.raises(HostError) as e:
        run_hostname(make_host(identity_file=str(sshd.other_key)))
    text = str(e.value)
    assert text.startswith(f"web-1: connect: authentication failed for root@127.0.0.1:{sshd.port}")
    assert str(sshd.other_key) in text
    assert "authorized_keys" in text
    assert not isinstance(e.value, UnreachableError)


def test_missing_identity_file(make_host: MakeHost, tmp_path: Path, no_agent: None) -> None:
    with pytest.raises(HostError, match=r"identity_file .*nope does not exist"):
        run_hostname(make_host(identity_file=str(tmp_path / "nope")))


def test_refused_port_is_unreachable(make_host: MakeHost, no_agent: None) -> None:
    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UnreachableError) as e:
        run_hostname(make_host(port=port))
    assert str(e.value).startswith("web-1: unreachable (connection refused by 127.0.0.1:")


def test_silent_server_is_unreachable_within_connect_timeout(
    make_host: MakeHost, no_agent: None
) -> None:
    # A socket that completes the TCP handshake (listen backlog) but never
    # speaks SSH: the worst case, a host that is up but hung.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(5)
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(UnreachableError) as e:
            run_hostname(make_host(port=port, connect_timeout=1.0))
        elapsed = time.monotonic() - started
    assert "web-1: unreachable (no SSH banner" in str(e.value)
    assert elapsed < 3.0


def test_ssh_config_is_honoured_and_inventory_wins(
    make_host: MakeHost, sshd: SSHServer, tmp_path: Path, no_agent: None
) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host box\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User root\n"
        f"  IdentityFile {sshd.client_key}\n"
        "Host box-wrong-port\n  HostName 127.0.0.1\n  Port 1\n  User nobody\n"
    )
    # Everything from ssh_config: address is the alias, no inventory port/user/key.
    host = make_host(address="box", port=None, user=None, identity_file=None)
    with SSHExecutor(host, ssh_config=str(config)) as ex:
        assert ex.run(cmd("id", "-un")).stdout.strip() == "root"
        assert ex.connect().endpoint.port == sshd.port
    # Inventory settings win over the file's Port and User.
    host = make_host(address="box-wrong-port")
    with SSHExecutor(host, ssh_config=str(config)) as ex:
        assert ex.run(cmd("id", "-un")).stdout.strip() == "root"


def test_jump_host(
    make_host: MakeHost, sshd: SSHServer, no_agent: None, caplog: pytest.LogCaptureFixture
) -> None:
    # The server is its own bastion: connect to it, then direct-tcpip to itself.
    caplog.set_level("DEBUG", "deployer.remote")
    host = make_host(proxy_jump=f"root@127.0.0.1:{sshd.port}")
    with SSHExecutor(host, ssh_config=None) as ex:
        # The far side sees the connection coming from the bastion's forwarding.
        assert ex.run(cmd("echo", "via jump")).stdout == "via jump\n"
        assert len(ex.connect().jumps) == 1
        assert ex.connections_opened == 1
    assert "via 1 jump host(s)" in caplog.text


def test_jump_host_and_target_keys_are_both_verified(
    make_host: MakeHost, sshd: SSHServer, tmp_path: Path, no_agent: None
) -> None:
    # Bastion 127.0.0.1, target "localhost" (as the bastion resolves it): two
    # known_hosts names for the same server, so each check is visible.
    bastion = f"[127.0.0.1]:{sshd.port}"
    target = f"[localhost]:{sshd.port}"
    kh = tmp_path / "kh"
    jump = f"root@127.0.0.1:{sshd.port}"

    kh.write_text(sshd.known_hosts_line(target))
    with pytest.raises(HostKeyError) as e:
        run_hostname(make_host(address="localhost", known_hosts=str(kh), proxy_jump=jump))
    assert f"unknown host key for {bastion}" in str(e.value)

    kh.write_text(sshd.known_hosts_line(bastion))
    with pytest.raises(HostKeyError) as e:
        run_hostname(make_host(address="localhost", known_hosts=str(kh), proxy_jump=jump))
    assert f"unknown host key for {target}" in str(e.value)
    # ssh-keyscan must run where the target is reachable: on the bastion.
    scan = f"ssh ssh://root@127.0.0.1:{sshd.port} 'ssh-keyscan -p {sshd.port} localhost' >> {kh}"
    assert scan in str(e.value)

    kh.write_text(sshd.known_hosts_line(bastion) + sshd.known_hosts_line(target))
    assert run_hostname(
        make_host(address="localhost", known_hosts=str(kh), proxy_jump=jump)
    ) == "ok"


def test_failed_connect_is_not_retried_within_a_run(make_host: MakeHost, no_agent: None) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(5)
        host = make_host(port=silent.getsockname()[1], connect_timeout=0.5)
        with SSHExecutor(host, ssh_config=None) as ex:
            with pytest.raises(UnreachableError) as first:
                ex.run(cmd("true"))
            started = time.monotonic()
            with pytest.raises(UnreachableError) as second:
                ex.run(cmd("true"))
            assert time.monotonic() - started < 0.2
            assert second.value is first.value
            assert ex.connections_opened == 0


def test_ssh_agent_key_is_used(
    make_host: MakeHost, sshd: SSHServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while not sock.exists():
            assert time.monotonic() < deadline, "ssh-agent did not start"
            time.sleep(0.02)
        env = {"SSH_AUTH_SOCK": str(sock), "PATH": "/usr/bin:/bin"}
        subprocess.run(["ssh-add", "-q", str(sshd.client_key)], env=env, check=True,
                       capture_output=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/id_* to fall back on
        assert run_hostname(make_host(identity_file=None)) == "ok"
        # Without the agent the same host has no key to offer.
        monkeypatch.delenv("SSH_AUTH_SOCK")
        with pytest.raises(HostError) as e:
            run_hostname(make_host(identity_file=None))
        assert str(e.value).startswith("web-1: connect: no key to offer to root@127.0.0.1:")
        assert not isinstance(e.value, UnreachableError)
    finally:
        agent.terminate()
        agent.wait(5)
