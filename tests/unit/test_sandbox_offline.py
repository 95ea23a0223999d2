"""The sandbox's pure parts, offline: key material, the inventory text, the
host image recipe, ids and run options."""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

import bcrypt
import paramiko
import pytest
import yaml
from cryptography import x509

from deployer.config.models import InventoryConfig
from deployer.errors import ConfigError
from deployer.sandbox import hostimage, hosts, inventory, manager, pki


def test_server_cert_is_signed_by_the_ca_for_the_ip(tmp_path: Path) -> None:
    ca = pki.make_ca("test CA")
    cert = pki.make_server_cert(ca, "registry", ["10.213.0.1", "10.213.0.2"], ["localhost"])
    assert pki.cert_ip_sans(cert.public) == {"10.213.0.1", "10.213.0.2"}
    assert pki.cert_issued_by(cert.public, ca.public)
    assert not pki.cert_issued_by(cert.public, pki.make_ca("other").public)
    assert 800 < pki.cert_days_left(cert.public) <= pki.SERVER_DAYS
    c = x509.load_pem_x509_certificate(ca.public)
    assert c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # Python's TLS stack accepts the pair (chain loads, key matches)
    (tmp_path / "ca.crt").write_bytes(ca.public)
    (tmp_path / "tls.crt").write_bytes(cert.public)
    (tmp_path / "tls.key").write_bytes(cert.private)
    ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    ctx.load_cert_chain(str(tmp_path / "tls.crt"), str(tmp_path / "tls.key"))


def test_htpasswd_is_bcrypt() -> None:
    password = pki.new_password()
    assert len(password) >= 30 and password.replace("-", "").replace("_", "").isalnum()
    user, _, hashed = pki.htpasswd_line("deployer", password).strip().partition(":")
    assert user == "deployer" and hashed.startswith("$2")
    assert bcrypt.checkpw(password.encode(), hashed.encode())
    line = pki.htpasswd_line("deployer", password)
    assert pki.htpasswd_matches(line, "deployer", password)
    assert not pki.htpasswd_matches(line, "deployer", password + "x")
    assert not pki.htpasswd_matches(line, "other", password)
    # an entry of an older sandbox (cost 10, every registry request paid ~90 ms)
    old = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
    assert not pki.htpasswd_matches(f"deployer:{old}\n", "deployer", password)


def test_ssh_keys_load_in_paramiko(tmp_path: Path) -> None:
    kp = pki.ssh_keypair("me@test")
    (tmp_path / "id").write_bytes(kp.private)
    key = paramiko.Ed25519Key.from_private_key_file(str(tmp_path / "id"))
    kind, b64 = pki.public_key_fields(kp.public)
    assert (kind, b64) == (key.get_name(), key.get_base64())
    assert kp.public.decode().endswith(" me@test\n")
    with pytest.raises(ValueError):
        pki.public_key_fields("garbage")


def test_inventory_text_is_valid_and_loads() -> None:
    text = inventory.render(
        sandbox_rel=".deployer/sandbox",
        registry_server="10.213.0.1:5443",
        registry_username="deployer",
        hosts=[("sandbox-1", "10.213.0.11"), ("sandbox-2", "10.213.0.12")],
    )
    assert text.startswith("# written by `deployer sandbox up`")
    inv = InventoryConfig.model_validate(yaml.safe_load(text))
    assert inv.ssh.user == "deploy" and inv.ssh.host_key_policy == "strict"
    assert inv.ssh.identity_file == ".deployer/sandbox/id_ed25519"
    assert inv.ssh.known_hosts == ".deployer/sandbox/known_hosts"
    assert inv.docker.install == "distro"
    assert inv.registry is not None
    assert inv.registry.server == "10.213.0.1:5443"
    assert inv.registry.password == "${SANDBOX_REGISTRY_PASSWORD}"
    assert inv.secrets_file == ".deployer/sandbox/registry.env"
    assert {n: h.address for n, h in inv.groups["sandbox"].hosts.items()} == {
        "sandbox-1": "10.213.0.11",
        "sandbox-2": "10.213.0.12",
    }


def test_host_dockerfile() -> None:
    plain = hostimage.dockerfile("ubuntu:24.04")
    assert plain.startswith("# Built by") and "FROM ubuntu:24.04\n" in plain
    for pkg in hostimage.BASE_PACKAGES:
        assert f" {pkg}" in plain
    assert "docker.io" not in plain
    assert "STOPSIGNAL SIGRTMIN+3" in plain and 'CMD ["/sbin/init"]' in plain
    assert "rm -f /etc/ssh/ssh_host_*" in plain
    assert "NOPASSWD:ALL" in plain
    with_docker = hostimage.dockerfile("ubuntu:24.04", with_docker=True)
    assert "docker.io" in with_docker and "docker-compose-v2" in with_docker
    assert "systemctl enable docker.service" in with_docker


def test_host_image_tag_follows_base_id_and_recipe() -> None:
    a = hostimage.image_tag("debian:bookworm", "sha256:aaa", False)
    assert a.startswith("deployer-sandbox-host:debian-bookworm-")
    assert hostimage.image_tag("debian:bookworm", "sha256:aaa", False) == a
    assert hostimage.image_tag("debian:bookworm", "sha256:bbb", False) != a
    assert "-docker-" in hostimage.image_tag("debian:bookworm", "sha256:aaa", True)


def test_sandbox_id_depends_on_the_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ida = manager.sandbox_id(tmp_path / "a")
    assert ida != manager.sandbox_id(tmp_path / "b")
    monkeypatch.chdir(tmp_path)
    assert manager.sandbox_id(Path("a")) == ida
    assert manager.sandbox_dir(Path("a")) == tmp_path / "a" / ".deployer" / "sandbox"


def test_run_options() -> None:
    caps = hosts.run_options("caps")
    assert caps["cap_add"] == ["ALL"] and caps["cap_drop"] == ["SYS_RESOURCE"]
    assert caps["cgroupns"] == "host" and caps["device_cgroup_rules"] == ["a *:* rwm"]
    assert set(caps["tmpfs"]) == {"/run", "/run/lock"}
    assert "seccomp=unconfined" in caps["security_opt"]
    assert caps["systempaths_unconfined"] is True
    priv = hosts.run_options("privileged")
    assert priv["privileged"] is True and "cap_add" not in priv


def test_bad_options_fail_before_the_engine(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cap mode"):
        manager._resolve_options(None, None, None, "bogus", None)
    with pytest.raises(ConfigError, match="hosts"):
        manager.up(tmp_path, hosts=-1)


def test_options_default_from_state_then_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEPLOYER_SANDBOX_BASE_IMAGE", raising=False)
    monkeypatch.delenv("DEPLOYER_SANDBOX_CAP_MODE", raising=False)
    assert manager._resolve_options(None, None, None, None, None)[:3] == (
        "ubuntu:24.04",
        False,
        "caps",
    )
    monkeypatch.setenv("DEPLOYER_SANDBOX_BASE_IMAGE", "debian:bookworm")
    assert manager._resolve_options(None, None, None, None, None)[0] == "debian:bookworm"
    state = {"options": {"base_image": "ubuntu:22.04", "with_docker": True}}
    assert manager._resolve_options(state, None, None, None, None)[:2] == ("ubuntu:22.04", True)
    assert manager._resolve_options(state, "x:1", False, None, None)[:2] == ("x:1", False)


def test_host_addresses() -> None:
    assert hosts.host_address("10.213.0.0/24", 1) == "10.213.0.11"
    assert ipaddress.ip_address(hosts.host_address("10.213.5.0/24", 200)) == (
        ipaddress.ip_address("10.213.5.210")
    )
    with pytest.raises(ConfigError):
        hosts.host_address("10.213.0.0/26", 60)


def test_inventory_rewrite_keeps_user_keys(tmp_path) -> None:
    import yaml

    from deployer.sandbox import inventory as inv

    first = inv.render(sandbox_rel=".deployer/sandbox", registry_server="10.213.0.1:5443",
                       registry_username="deployer", hosts=[("sandbox-1", "10.213.0.11")])
    path = inv.write(tmp_path, first)
    path.write_text(path.read_text() + "vars:\n  greeting: hi  # mine\n  db_password: "
                    "\"${DB_PASSWORD}\"\nrollout: {batches: [1]}\n")
    second = inv.render(sandbox_rel=".deployer/sandbox", registry_server="10.213.0.1:5443",
                        registry_username="deployer",
                        hosts=[("sandbox-1", "10.213.0.11"), ("sandbox-2", "10.213.0.12")])
    inv.write(tmp_path, second)
    inv.write(tmp_path, second)  # twice: the user's part is not duplicated
    text = path.read_text()
    data = yaml.safe_load(text)
    assert data["vars"] == {"greeting": "hi", "db_password": "${DB_PASSWORD}"}
    assert data["rollout"] == {"batches": [1]}
    assert list(data["groups"]["sandbox"]["hosts"]) == ["sandbox-1", "sandbox-2"]
    assert text.count("greeting: hi  # mine") == 1
