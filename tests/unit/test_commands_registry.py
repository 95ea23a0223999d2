"""Registry login: password on stdin only, a per-run DOCKER_CONFIG, clean-up."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from deployer.commands.registry import (
    docker_config_dir,
    registry_login,
    remove_stale_configs,
)
from deployer.secrets import MASK, Secret

PASSWORD = "s3cr3t-Pa55word!"
RELEASE = "20260101T120000Z-abc123"


def login(**kw):
    args = {
        "server": "registry.example.com:5000",
        "username": "ci-bot",
        "password": Secret(PASSWORD),
    }
    args.update(kw)
    return registry_login("/opt/shop", RELEASE, **args)


def test_password_only_on_stdin() -> None:
    r = login()
    assert r.login.stdin == PASSWORD
    assert all(PASSWORD not in a for a in r.login.argv)
    assert PASSWORD not in r.login.shell()
    assert PASSWORD not in r.login.display()
    assert r.login.display().endswith(f"<<< {MASK}")
    assert PASSWORD not in repr(r)
    assert PASSWORD not in repr(r.login)


def test_login_argv_and_config_dir() -> None:
    r = login()
    assert r.config_dir == "/opt/shop/.docker-config-20260101T120000Z-abc123"
    assert r.config_dir == docker_config_dir("/opt/shop", RELEASE)
    assert r.login.argv[3:] == (
        "sh",
        "/opt/shop/.docker-config-20260101T120000Z-abc123",
        "registry.example.com:5000",
        "--username",
        "ci-bot",
        "--password-stdin",
    )
    assert r.env == (("DOCKER_CONFIG", "/opt/shop/.docker-config-20260101T120000Z-abc123"),)
    assert r.cleanup.argv == ("rm", "-rf", "--", "/opt/shop/.docker-config-20260101T120000Z-abc123")
    assert not r.login.sudo and not r.cleanup.sudo


def test_docker_hub_has_no_server_argument() -> None:
    r = login(server=None)
    assert r.login.argv[4:] == (r.config_dir, "--username", "ci-bot", "--password-stdin")


def test_sudo_applies_to_login_and_cleanup() -> None:
    r = login(sudo=True)
    assert r.login.sudo and r.cleanup.sudo
    assert r.login.shell().startswith("sudo -n -- sh -c ")


def test_needs_credentials() -> None:
    with pytest.raises(ValueError):
        login(password="")


def test_bad_release_id_cannot_escape() -> None:
    with pytest.raises(ValueError):
        registry_login("/opt/shop", "../x", server=None, username="u", password="p")


def test_login_script_runs(tmp_path: Path) -> None:
    """With a fake docker: 0700 dir, DOCKER_CONFIG set, password on stdin."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "docker"
    fake.write_text(
        '#!/bin/sh\nprintf "%s\\n" "$DOCKER_CONFIG" "$*" > "$DOCKER_CONFIG/called"\n'
        'cat > "$DOCKER_CONFIG/stdin"\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    deploy_dir = tmp_path / "app"
    deploy_dir.mkdir()
    r = registry_login(
        str(deploy_dir), RELEASE, server="reg:5000", username="ci", password=Secret(PASSWORD)
    )
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "HOME": str(tmp_path)}
    subprocess.run(
        ["sh", "-c", r.login.shell()], input=r.login.stdin, text=True, env=env, check=True
    )
    cfg = Path(r.config_dir)
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o700
    assert (cfg / "called").read_text() == (
        f"{cfg}\nlogin reg:5000 --username ci --password-stdin\n"
    )
    assert (cfg / "stdin").read_text() == PASSWORD
    subprocess.run(["sh", "-c", r.cleanup.shell()], check=True)
    assert not cfg.exists()


def test_remove_stale_configs(tmp_path: Path) -> None:
    (tmp_path / ".docker-config-old1").mkdir()
    (tmp_path / ".docker-config-old1" / "config.json").write_text("{}")
    (tmp_path / ".docker-config-old2").mkdir()
    (tmp_path / "releases").mkdir()
    cmd = remove_stale_configs(str(tmp_path))
    out = subprocess.run(
        ["sh", "-c", cmd.shell()], capture_output=True, text=True, check=True
    ).stdout
    assert sorted(os.listdir(tmp_path)) == ["releases"]
    assert out.count("removed=") == 2
    # nothing to remove: still success
    subprocess.run(["sh", "-c", cmd.shell()], check=True)
