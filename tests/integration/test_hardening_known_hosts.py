"""known_hosts edge cases against the real sshd: non-regular files, @revoked,
@cert-authority, and an accepted key that must read back."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from deployer.commands.base import cmd
from deployer.config.inventory import Host
from deployer.remote.executor import SSHExecutor
from deployer.remote.hostkeys import HostKeyError

from .conftest import SSHServer

MakeHost = Callable[..., Host]


def run_hostname(host: Host) -> str:
    with SSHExecutor(host, ssh_config=None) as ex:
        return ex.run(cmd("echo", "ok")).stdout.strip()


@pytest.mark.parametrize("policy", ["strict", "accept-new"])
def test_dev_null_known_hosts_is_refused(make_host: MakeHost, no_agent: None,
                                         policy: str) -> None:
    # /dev/null with accept-new used to "add" every key: checking was off.
    with pytest.raises(HostKeyError, match="not a regular file"):
        run_hostname(make_host(known_hosts="/dev/null", host_key_policy=policy))


def test_fifo_known_hosts_is_refused_without_hanging(
    make_host: MakeHost, tmp_path: Path, no_agent: None
) -> None:
    fifo = tmp_path / "kh.fifo"
    os.mkfifo(fifo)
    with pytest.raises(HostKeyError, match="not a regular file"):
        run_hostname(make_host(known_hosts=str(fifo), host_key_policy="accept-new"))


def test_directory_known_hosts_is_refused(
    make_host: MakeHost, tmp_path: Path, no_agent: None
) -> None:
    with pytest.raises(HostKeyError, match="is a directory"):
        run_hostname(make_host(known_hosts=str(tmp_path), host_key_policy="accept-new"))


def test_revoked_key_is_refused_even_if_also_listed(
    make_host: MakeHost, sshd: SSHServer, tmp_path: Path, no_agent: None
) -> None:
    kh = tmp_path / "kh"
    kh.write_text(sshd.known_hosts_line() + "@revoked * " + sshd.host_key_pub + "\n")
    for policy in ("strict", "accept-new"):
        with pytest.raises(HostKeyError, match="REVOKED") as e:
            run_hostname(make_host(known_hosts=str(kh), host_key_policy=policy))
        assert "line 2" in str(e.value)


def test_revoked_line_for_another_key_does_not_break_connections(
    make_host: MakeHost, sshd: SSHServer, tmp_path: Path, no_agent: None
) -> None:
    other = (sshd.dir / "other.pub").read_text().split()
    kh = tmp_path / "kh"
    kh.write_text(f"@revoked * {other[0]} {other[1]}\n"
                  f"@cert-authority *.example.com {other[0]} {other[1]}\n"
                  + sshd.known_hosts_line())
    assert run_hostname(make_host(known_hosts=str(kh))) == "ok"


def test_cert_authority_only_is_refused_clearly(
    make_host: MakeHost, sshd: SSHServer, tmp_path: Path, no_agent: None
) -> None:
    other = (sshd.dir / "other.pub").read_text().split()
    kh = tmp_path / "kh"
    kh.write_text(f"@cert-authority * {other[0]} {other[1]}\n")
    with pytest.raises(HostKeyError, match="does not support host certificates"):
        run_hostname(make_host(known_hosts=str(kh)))


def test_accept_new_key_reads_back_and_is_then_known(
    make_host: MakeHost, sshd: SSHServer, tmp_path: Path, no_agent: None
) -> None:
    kh = tmp_path / "new" / "known_hosts"
    assert not kh.exists()
    assert run_hostname(make_host(known_hosts=str(kh), host_key_policy="accept-new")) == "ok"
    assert kh.is_file() and (kh.stat().st_mode & 0o777) == 0o600
    assert run_hostname(make_host(known_hosts=str(kh))) == "ok"  # strict: now known
