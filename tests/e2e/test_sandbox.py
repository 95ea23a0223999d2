"""``deployer sandbox``: hosts reachable over SSH with strict host-key
checking, a changed key refused, the registry's TLS and auth, ``up`` twice
idempotent, ``down`` leaving nothing behind, and the CLI."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import paramiko
import pytest
import yaml

from deployer.sandbox import manager, pki

BASE_IMAGE = os.environ.get("DEPLOYER_SANDBOX_BASE_IMAGE", "debian:bookworm")

pytestmark = pytest.mark.e2e


def test_hosts_answer_ssh_with_strict_host_keys(sandbox: Any, ssh_to: Any, ssh_run: Any) -> None:
    assert [h.name for h in sandbox.hosts] == ["sandbox-1", "sandbox-2"]
    assert len({h.address for h in sandbox.hosts}) == 2
    for h in sandbox.hosts:
        c = ssh_to(h.name)
        code, out, _ = ssh_run(c, "id -un; hostname")
        assert code == 0 and out.split() == ["deploy", h.name]
        assert ssh_run(c, "sudo -n true")[0] == 0, "deploy must have passwordless sudo"
        code, out, _ = ssh_run(c, "ps -p 1 -o comm=")
        assert out.strip() == "systemd", f"PID 1 on {h.name} is {out.strip()!r}"
        code, out, _ = ssh_run(c, "systemctl is-system-running")
        assert out.strip() in ("running", "degraded"), out
        code, _, _ = ssh_run(c, "command -v docker || command -v dockerd")
        assert code != 0, f"{h.name} must start without Docker"
        # its key is the one the sandbox recorded
        key = c.get_transport().get_remote_server_key()
        assert f"{key.get_name()} {key.get_base64()}" == h.host_key


def test_openssh_with_strict_host_key_checking(sandbox: Any) -> None:
    if shutil.which("ssh") is None:
        pytest.fail("openssh-client is not installed (.ci/setup installs it)")
    h = sandbox.hosts[0]
    p = subprocess.run(
        [
            "ssh",
            "-i",
            str(sandbox.ssh_key),
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={sandbox.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            f"{sandbox.ssh_user}@{h.address}",
            "sudo -n true && ps -p 1 -o comm=",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "systemd"


def test_each_host_has_its_own_host_key(sandbox: Any) -> None:
    keys = [h.host_key for h in sandbox.hosts]
    assert len(set(keys)) == len(keys)
    lines = [
        ln.split() for ln in sandbox.known_hosts.read_text().splitlines() if ln and ln[0] != "#"
    ]
    assert {(a, f"{t} {k}") for a, t, k in lines} == {
        (h.address, h.host_key) for h in sandbox.hosts
    }


def test_changed_host_key_is_refused(sandbox: Any, tmp_path: Path, ssh_connect: Any) -> None:
    h = sandbox.hosts[0]
    other = pki.ssh_keypair("impostor").public.decode().split()
    forged = tmp_path / "known_hosts"
    forged.write_text(f"{h.address} {other[0]} {other[1]}\n")
    with pytest.raises(paramiko.BadHostKeyException):
        ssh_connect(h.address, sandbox, known_hosts=forged)
    # an unknown host is refused too (no trust on first use)
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        ssh_connect(h.address, sandbox, known_hosts=empty)
    if shutil.which("ssh"):
        p = subprocess.run(
            [
                "ssh",
                "-i",
                str(sandbox.ssh_key),
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                f"UserKnownHostsFile={forged}",
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                f"{sandbox.ssh_user}@{h.address}",
                "true",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 255
        assert "HOST IDENTIFICATION HAS CHANGED" in p.stderr


def test_registry_refuses_wrong_password_and_accepts_the_right_one(
    sandbox: Any, docker_client: Any
) -> None:
    import docker.errors

    r = sandbox.registry
    assert r.server == f"{sandbox.gateway}:5443"
    with pytest.raises(docker.errors.APIError, match=r"401|nauthorized"):
        docker_client.login(r.username, r.password + "-wrong", registry=r.server, reauth=True)
    assert docker_client.login(r.username, r.password, registry=r.server, reauth=True)

    ref = f"{r.server}/e2e/sandbox-probe"
    image, _ = docker_client.images.build(
        fileobj=io.BytesIO(b"FROM debian:bookworm\nRUN echo probe > /probe\n"),
        tag=f"{ref}:1",
        rm=True,
    )
    try:
        auth = {"username": r.username, "password": r.password}
        bad = list(
            docker_client.images.push(
                ref,
                tag="1",
                stream=True,
                decode=True,
                auth_config={"username": r.username, "password": "nope"},
            )
        )
        assert any("error" in chunk for chunk in bad), bad
        good = list(
            docker_client.images.push(ref, tag="1", stream=True, decode=True, auth_config=auth)
        )
        assert not any("error" in chunk for chunk in good), good
        assert any("Digest" in (chunk.get("aux") or {}) for chunk in good), good
    finally:
        docker_client.images.remove(image.id, force=True)


def test_hosts_trust_the_registry_ca(sandbox: Any, ssh_to: Any, ssh_run: Any) -> None:
    r = sandbox.registry
    for h in sandbox.hosts:
        c = ssh_to(h.name)
        # system trust store: curl verifies the registry's certificate (401 = TLS fine, no auth)
        code, out, err = ssh_run(
            c, f"curl -sS -o /dev/null -w '%{{http_code}}' https://{r.server}/v2/"
        )
        assert (code, out) == (0, "401"), err
        code, out, _ = ssh_run(c, f"curl -sS -u {r.username}:{r.password} https://{r.server}/v2/")
        assert code == 0 and out.strip() == "{}"
        # and the file a nested dockerd reads
        code, out, _ = ssh_run(c, f"cat /etc/docker/certs.d/{r.server}/ca.crt")
        assert out.encode() == r.ca_cert.read_bytes()


def test_local_engine_trusts_the_registry_ca(sandbox: Any) -> None:
    f = Path("/etc/docker/certs.d") / sandbox.registry.server / "ca.crt"
    assert f.read_bytes() == sandbox.registry.ca_cert.read_bytes()


def test_inventory_points_at_the_sandbox(sandbox: Any) -> None:
    from deployer.config.models import InventoryConfig

    text = sandbox.inventory.read_text()
    assert sandbox.inventory == sandbox.project_dir / "inventories" / "sandbox.yaml"
    data = yaml.safe_load(text)
    inv = InventoryConfig.model_validate(data)
    assert inv.docker.install == "distro"
    assert inv.ssh.host_key_policy == "strict"
    assert inv.registry is not None and inv.registry.server == sandbox.registry.server
    assert inv.registry.password == "${SANDBOX_REGISTRY_PASSWORD}"
    hosts = inv.groups["sandbox"].hosts
    assert {n: hc.address for n, hc in hosts.items()} == {h.name: h.address for h in sandbox.hosts}
    assert inv.secrets_file is not None
    env = (sandbox.project_dir / inv.secrets_file).read_text()
    assert f"SANDBOX_REGISTRY_PASSWORD={sandbox.registry.password}" in env
    assert (sandbox.project_dir / str(inv.ssh.identity_file)) == sandbox.ssh_key
    # git-ignored however the project's own .gitignore looks
    assert (sandbox.sandbox_dir / ".gitignore").read_text().strip().endswith("*")


def test_inventory_loads_with_the_config_loader(sandbox: Any) -> None:
    from deployer.config import load_project

    project = load_project(sandbox.project_dir, "sandbox")
    assert [h.address for h in project.hosts] == [h.address for h in sandbox.hosts]
    assert project.registry.server == sandbox.registry.server
    assert str(project.registry.password) == sandbox.registry.password
    host = project.hosts[0]
    assert Path(host.ssh.identity_path or "").resolve() == sandbox.ssh_key
    assert Path(host.ssh.known_hosts_path).resolve() == sandbox.known_hosts


def test_up_twice_is_idempotent(sandbox: Any) -> None:
    before = {h.name: h.container_id for h in sandbox.hosts}
    known = sandbox.known_hosts.read_bytes()
    ca = sandbox.registry.ca_cert.read_bytes()
    again = manager.up(sandbox.project_dir, hosts=2)
    assert {h.name: h.container_id for h in again.hosts} == before
    assert again.registry.container == sandbox.registry.container
    assert again.registry.password == sandbox.registry.password
    assert sandbox.known_hosts.read_bytes() == known
    assert sandbox.registry.ca_cert.read_bytes() == ca
    assert again.network == sandbox.network and again.subnet == sandbox.subnet
    st = manager.status(sandbox.project_dir)
    assert st is not None and all(h.state == "running" for h in st.hosts)
    assert st.registry.state == "running"


def test_own_sandbox_grows_resets_and_goes_down_cleanly(
    sandbox: Any, tmp_path: Path, ssh_connect: Any, ssh_run: Any
) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "deployer.yaml").write_text("app: grow\n")
    try:
        one = manager.up(project, hosts=1, base_image=BASE_IMAGE)
        assert [h.name for h in one.hosts] == ["sandbox-1"]
        # coexists with the session sandbox: its own network, subnet and registry
        assert one.network != sandbox.network and one.subnet != sandbox.subnet
        assert one.registry.server != sandbox.registry.server
        two = manager.up(project, hosts=2)
        assert [h.name for h in two.hosts] == ["sandbox-1", "sandbox-2"]
        assert two.hosts[0].container_id == one.hosts[0].container_id
        assert two.base_image == BASE_IMAGE  # kept from the first up

        old_key = two.hosts[1].host_key
        fresh = manager.reset_host(project, "sandbox-2")
        assert fresh.host_key != old_key and fresh.container_id != two.hosts[1].container_id
        info = manager.status(project)
        assert info is not None
        c = ssh_connect(fresh.address, info)
        try:
            assert ssh_run(c, "sudo -n true")[0] == 0
        finally:
            c.close()
    finally:
        removed = manager.down(project)
    assert removed >= 5  # registry + 2 hosts, network, volumes
    assert manager.leftovers(project) == []
    assert manager.down(project) == 0  # twice is safe
    assert not (project / ".deployer").exists()
    assert manager.status(project) is None


def _cli(project: Path, *args: str, check: int = 0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "DEPLOYER_SANDBOX_BASE_IMAGE": BASE_IMAGE}
    p = subprocess.run(
        [sys.executable, "-m", "deployer", "-C", str(project), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert p.returncode == check, f"exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


def test_cli_up_status_down(docker_client: Any, tmp_path: Path) -> None:
    project = tmp_path / "cli"
    project.mkdir()
    (project / "deployer.yaml").write_text("app: cli\n")
    try:
        p = _cli(project, "sandbox", "up", "--hosts", "1")
        assert "sandbox-1" in p.stdout and "deployer ship sandbox" in p.stdout
        status = json.loads(_cli(project, "-o", "json", "sandbox", "status").stdout)
        assert [h["state"] for h in status["hosts"]] == ["running"]
        assert status["registry"]["state"] == "running"
        assert "password" not in json.dumps(status["registry"])
        assert (project / "inventories" / "sandbox.yaml").is_file()
    finally:
        p = _cli(project, "sandbox", "down")
    assert "removed" in p.stdout
    assert manager.leftovers(project) == []
    p = _cli(project, "-o", "json", "sandbox", "down")
    assert json.loads(p.stdout) == {"removed": 0}
    assert "no sandbox" in _cli(project, "sandbox", "status").stdout
    assert _cli(project, "-o", "json", "sandbox", "status").stdout.strip() == "null"


def test_cli_rejects_bad_options(tmp_path: Path) -> None:
    p = _cli(tmp_path, "sandbox", "up", "--cap-mode", "bogus", check=2)
    assert "cap-mode" in p.stderr


def test_with_docker_host_pulls_what_the_local_engine_pushed(
    docker_client: Any, tmp_path: Path, ssh_connect: Any, ssh_run: Any
) -> None:
    """One image reference for the push from here and the pull on a host:
    the registry on the gateway IP, its CA trusted by both engines."""
    project = tmp_path / "withdocker"
    project.mkdir()
    (project / "deployer.yaml").write_text("app: wd\n")
    ref = ""
    try:
        info = manager.up(project, hosts=1, base_image=BASE_IMAGE, with_docker=True)
        r = info.registry
        ref = f"{r.server}/wd/probe:1"
        docker_client.images.build(
            fileobj=io.BytesIO(b"FROM debian:bookworm\nRUN echo from-the-registry > /probe\n"),
            tag=ref,
            rm=True,
        )
        auth = {"username": r.username, "password": r.password}
        pushed = list(docker_client.images.push(ref, stream=True, decode=True, auth_config=auth))
        assert not any("error" in chunk for chunk in pushed), pushed
        c = ssh_connect(info.hosts[0].address, info)
        try:
            code, out, err = ssh_run(
                c, "systemctl is-active docker && docker info -f '{{.Driver}}'"
            )
            assert code == 0 and out.split() == ["active", "overlay2"], out + err
            code, out, err = ssh_run(
                c,
                f"printf %s '{r.password}' | docker login -u {r.username} --password-stdin "
                f"{r.server} >/dev/null && docker run --rm {ref} cat /probe",
                timeout=180,
            )
            assert (code, out.strip()) == (0, "from-the-registry"), err
        finally:
            c.close()
    finally:
        manager.down(project)
        if ref:
            with contextlib.suppress(Exception):
                docker_client.images.remove(ref, force=True)
    assert manager.leftovers(project) == []
