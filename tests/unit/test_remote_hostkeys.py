"""Host-key policy decisions and ProxyJump parsing, on files and generated keys."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from pathlib import Path

import paramiko
import pytest

from deployer.remote.hostkeys import (
    HostKeyError,
    KnownHosts,
    check_host_key,
    fingerprint,
    known_hosts_name,
)
from deployer.remote.ssh import parse_jump


@pytest.fixture(scope="module")
def keys() -> tuple[paramiko.PKey, paramiko.PKey, paramiko.PKey]:
    return (
        paramiko.ECDSAKey.generate(),
        paramiko.ECDSAKey.generate(),
        paramiko.RSAKey.generate(1024),
    )


def line(name: str, key: paramiko.PKey) -> str:
    return f"{name} {key.get_name()} {key.get_base64()}\n"


def hashed(name: str) -> str:
    salt = b"0123456789abcdefghij"
    mac = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(mac).decode()}"


def test_fingerprint_matches_openssh_format(keys: tuple[paramiko.PKey, ...]) -> None:
    fp = fingerprint(keys[0])
    expected = base64.b64encode(hashlib.sha256(keys[0].asbytes()).digest()).decode().rstrip("=")
    assert fp == "SHA256:" + expected


def test_known_hosts_name() -> None:
    assert known_hosts_name("web1", 22) == "web1"
    assert known_hosts_name("10.0.0.1", 2222) == "[10.0.0.1]:2222"


def test_known_key_passes(tmp_path: Path, keys: tuple[paramiko.PKey, ...]) -> None:
    kh = tmp_path / "kh"
    kh.write_text(line("other", keys[1]) + line("[h]:2222", keys[0]))
    assert check_host_key("web", "[h]:2222", keys[0], str(kh)) == "known"


def test_hashed_entry_passes(tmp_path: Path, keys: tuple[paramiko.PKey, ...]) -> None:
    kh = tmp_path / "kh"
    kh.write_text(line(hashed("[h]:2222"), keys[0]))
    assert check_host_key("web", "[h]:2222", keys[0], str(kh)) == "known"
    # ... and the port matters: the same host on 22 is unknown.
    with pytest.raises(HostKeyError, match="unknown host key"):
        check_host_key("web", "h", keys[0], str(kh))


def test_unknown_strict_refused_with_fingerprint_and_keyscan(
    tmp_path: Path, keys: tuple[paramiko.PKey, ...]
) -> None:
    kh = tmp_path / "kh"
    with pytest.raises(HostKeyError) as e:
        check_host_key("web", "[h]:2222", keys[0], str(kh), scan_host="h", scan_port=2222)
    text = str(e.value)
    assert text.startswith("web: host key: unknown host key for [h]:2222: ecdsa-sha2-nistp256 ")
    assert fingerprint(keys[0]) in text
    assert f"ssh-keyscan -p 2222 h >> {kh}" in text
    assert not kh.exists()


def test_accept_new_appends_once_and_logs(
    tmp_path: Path, keys: tuple[paramiko.PKey, ...], caplog: pytest.LogCaptureFixture
) -> None:
    kh = tmp_path / "kh"
    kh.write_text("# no newline at end")
    assert check_host_key("web", "h", keys[0], str(kh), "accept-new") == "added"
    assert check_host_key("web", "h", keys[0], str(kh), "accept-new") == "known"
    assert kh.read_text() == "# no newline at end\n" + line("h", keys[0])
    assert KnownHosts(str(kh)).lookup("h")[0].key == keys[0]
    assert fingerprint(keys[0]) in caplog.text
    assert any(r.levelno == logging.WARNING for r in caplog.records)


@pytest.mark.parametrize("policy", ["strict", "accept-new"])
def test_changed_key_refused(
    tmp_path: Path, keys: tuple[paramiko.PKey, ...], policy: str
) -> None:
    kh = tmp_path / "kh"
    kh.write_text(line("h", keys[1]))
    with pytest.raises(HostKeyError) as e:
        check_host_key("web", "h", keys[0], str(kh), policy)
    assert e.value.changed
    assert "CHANGED" in str(e.value)
    assert fingerprint(keys[0]) in str(e.value) and fingerprint(keys[1]) in str(e.value)
    assert f"ssh-keygen -R h -f {kh}" in str(e.value)
    assert kh.read_text() == line("h", keys[1])


def test_other_key_type_known_counts_as_changed(
    tmp_path: Path, keys: tuple[paramiko.PKey, ...]
) -> None:
    # The host is known by an RSA key and now shows an ECDSA one: refuse, do not add.
    kh = tmp_path / "kh"
    kh.write_text(line("h", keys[2]))
    with pytest.raises(HostKeyError, match="CHANGED"):
        check_host_key("web", "h", keys[0], str(kh), "accept-new")


def test_preferred_key_types_put_known_first(
    tmp_path: Path, keys: tuple[paramiko.PKey, ...]
) -> None:
    kh = tmp_path / "kh"
    kh.write_text(line("h", keys[2]))
    available = ["ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512", "rsa-sha2-256"]
    assert KnownHosts(str(kh)).preferred_key_types("h", available) == [
        "rsa-sha2-512", "rsa-sha2-256", "ssh-ed25519", "ecdsa-sha2-nistp256",
    ]
    assert KnownHosts(str(kh)).preferred_key_types("unknown", available) == available


def test_bad_policy_name(tmp_path: Path, keys: tuple[paramiko.PKey, ...]) -> None:
    with pytest.raises(HostKeyError, match="unknown host_key_policy 'yolo'"):
        check_host_key("web", "h", keys[0], str(tmp_path / "kh"), "yolo")


@pytest.mark.parametrize(
    ("spec", "hops"),
    [
        ("bastion", [(None, "bastion", None)]),
        ("ops@bastion:2200", [("ops", "bastion", 2200)]),
        ("ssh://ops@bastion:2200", [("ops", "bastion", 2200)]),
        ("a, b@c:3", [(None, "a", None), ("b", "c", 3)]),
        ("[2001:db8::1]:22", [(None, "2001:db8::1", 22)]),
        ("2001:db8::1", [(None, "2001:db8::1", None)]),
    ],
)
def test_parse_jump(spec: str, hops: list[tuple[str | None, str, int | None]]) -> None:
    assert parse_jump(spec) == hops


@pytest.mark.parametrize("spec", ["", "bastion:port", "a,,b", "[::1", "u@:22", "h:70000"])
def test_parse_jump_rejects(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_jump(spec)


def test_unchanged_known_hosts_is_parsed_once_and_changes_are_seen(
    tmp_path: Path, keys: tuple[paramiko.PKey, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every connection of a run reads the shared file; parsing it again each
    # time made that quadratic in the fleet (issue 19). Still read fresh:
    # what another host appends, or an edit in place, is seen at once.
    from deployer.remote import hostkeys

    parses: list[int] = []
    real = hostkeys._parse
    monkeypatch.setattr(hostkeys, "_parse", lambda text: parses.append(1) or real(text))
    kh = tmp_path / "kh"
    kh.write_text(line("web", keys[0]))
    store = KnownHosts(str(kh))
    for _ in range(5):
        assert [k.key for k in store.lookup("web")] == [keys[0]]
    assert KnownHosts(str(kh)).lookup("db") == []
    assert len(parses) == 1
    KnownHosts(str(kh)).append("db", keys[1])
    assert [k.key for k in store.lookup("db")] == [keys[1]]
    kh.write_text(line("web", keys[2]))  # replaced, not appended
    assert [k.key for k in store.lookup("web")] == [keys[2]]
    assert len(parses) == 3
