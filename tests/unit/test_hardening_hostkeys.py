"""known_hosts markers and files that are not regular files (pure, on files;
the same against a real sshd: tests/integration/test_hardening_known_hosts.py)."""

from __future__ import annotations

import os
from pathlib import Path

import paramiko
import pytest

from deployer.remote.hostkeys import HostKeyError, KnownHosts, check_host_key


@pytest.fixture(scope="module")
def keys() -> tuple[paramiko.PKey, paramiko.PKey]:
    return paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()


def line(prefix: str, key: paramiko.PKey) -> str:
    return f"{prefix} {key.get_name()} {key.get_base64()}\n"


def test_revoked_key_refused_under_both_policies(tmp_path: Path, keys: tuple) -> None:
    kh = tmp_path / "kh"
    kh.write_text(line("h", keys[0]) + line("@revoked *", keys[0]))
    for policy in ("strict", "accept-new"):
        with pytest.raises(HostKeyError, match=r"REVOKED.*line 2"):
            check_host_key("web", "h", keys[0], str(kh), policy)


def test_markers_do_not_break_other_hosts(tmp_path: Path, keys: tuple) -> None:
    kh = tmp_path / "kh"
    kh.write_text(line("@revoked *", keys[1]) + line("@cert-authority *.example.com", keys[1])
                  + "@unknown-marker x y z\nbadline\nh ssh-ed25519 !!notbase64!!\n"
                  + line("h,!evil", keys[0]) + line("web*.internal", keys[0]))
    assert check_host_key("web", "h", keys[0], str(kh)) == "known"
    assert check_host_key("web", "web3.internal", keys[0], str(kh)) == "known"
    assert KnownHosts(str(kh)).lookup("evil") == []


def test_cert_authority_only_refused_clearly(tmp_path: Path, keys: tuple) -> None:
    kh = tmp_path / "kh"
    kh.write_text(line("@cert-authority *.example.com", keys[1]))
    with pytest.raises(HostKeyError, match="does not support host certificates"):
        check_host_key("web", "a.example.com", keys[0], str(kh), "accept-new")


@pytest.mark.parametrize("policy", ["strict", "accept-new"])
def test_dev_null_and_directories_are_refused(tmp_path: Path, keys: tuple, policy: str) -> None:
    with pytest.raises(HostKeyError, match="not a regular file"):
        check_host_key("web", "h", keys[0], "/dev/null", policy)
    with pytest.raises(HostKeyError, match="is a directory"):
        check_host_key("web", "h", keys[0], str(tmp_path), policy)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(HostKeyError, match="not a regular file"):
        check_host_key("web", "h", keys[0], str(fifo), policy)


def test_accepted_key_must_read_back(tmp_path: Path, keys: tuple,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    kh = tmp_path / "new" / "kh"
    assert check_host_key("web", "h", keys[0], str(kh), "accept-new") == "added"
    assert check_host_key("web", "h", keys[0], str(kh), "strict") == "known"
    monkeypatch.setattr(KnownHosts, "append", lambda self, name, key: None)
    with pytest.raises(HostKeyError, match="does not read back"):
        check_host_key("web", "other", keys[1], str(kh), "accept-new")
