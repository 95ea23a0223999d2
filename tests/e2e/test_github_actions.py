"""deployer in a GitHub-like runner against the sandbox: the action's own SSH
and deploy steps (tests/action_harness.py) ship examples/flask-postgres, once
healthy and once with a release that fails its healthcheck. Checks the masks
(first, and the only place a secret appears), the per-host groups, the error
annotations, the step summary and the outputs."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from action_harness import Runner, StepRun
from conftest import copy_tracked

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "flask-postgres"
BASE_IMAGE = os.environ.get("DEPLOYER_SANDBOX_BASE_IMAGE", "debian:bookworm")
DB_PASSWORD = "gh-Db-Secret-7715"
BIN = str(Path(sys.executable).parent)
VARS = {"greeting": "hello-gha", "web_port": 8000, "workers": 1, "db_name": "flaskpg",
        "db_user": "flaskpg", "db_password": "${DB_PASSWORD}"}


class Env:
    def __init__(self, runner: Runner, info: Any) -> None:
        self.runner = runner
        self.info = info
        self.app = runner.workspace / "app"

    def set_vars(self, **extra: object) -> None:
        inv = self.app / "inventories" / "sandbox.yaml"
        base = inv.read_text().split("\n# test vars\n")[0]
        lines = [f"  {k}: {json.dumps(v)}" for k, v in {**VARS, **extra}.items()]
        inv.write_text(base + "\n# test vars\nvars:\n" + "\n".join(lines) + "\n")

    def deploy(self) -> StepRun:
        self.runner.summary.write_text("")
        return self.runner.run("deploy", timeout=1500, merge_stderr=True)

    def secrets(self) -> list[str]:
        return [DB_PASSWORD, self.info.registry.password]


@pytest.fixture(scope="module")
def gha(docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    from deployer.sandbox import manager

    runner = Runner(tmp_path_factory.mktemp("gha") / "runner",
                    base_env={"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
                              "DB_PASSWORD": DB_PASSWORD})
    app = runner.workspace / "app"
    copy_tracked(EXAMPLE, app)
    cfg = app / "deployer.yaml"
    cfg.write_text(cfg.read_text().replace("health_timeout: 180", "health_timeout: 60"))
    try:
        info = manager.up(app, hosts=1, base_image=BASE_IMAGE, with_docker=True)
        # The key and the host keys come through the action's inputs, as in a
        # workflow: drop the sandbox's identity_file and known_hosts.
        inv = app / "inventories" / "sandbox.yaml"
        text = re.sub(r"identity_file: [^,}]+, known_hosts: [^,}]+, ", "", inv.read_text())
        assert "identity_file" not in text and "known_hosts" not in text
        inv.write_text(text)
        runner.inputs = {
            "environment": "sandbox", "working-directory": "app",
            "ssh-private-key": Path(info.ssh_key).read_text(),
            "known-hosts": Path(info.known_hosts).read_text(),
        }
        ssh = runner.run("SSH key and known hosts")
        assert ssh.returncode == 0, ssh.stdout + ssh.stderr
        env = Env(runner, info)
        env.set_vars()
        yield env
    finally:
        pid = runner.exported.get("SSH_AGENT_PID")
        if pid:
            os.kill(int(pid), signal.SIGTERM)
        manager.down(app)


def check_masks(env: Env, out: str) -> list[str]:
    """Each secret is announced, only in ::add-mask:: lines, and those come
    before any other line. Returns the lines after the masks."""
    lines = out.splitlines()
    n = 0
    while n < len(lines) and lines[n].startswith("::add-mask::"):
        n += 1
    masks = {ln.removeprefix("::add-mask::") for ln in lines[:n]}
    for secret in env.secrets():
        assert secret in masks, f"{secret!r} not announced before the first line"
    rest = lines[n:]
    assert not any(ln.startswith("::add-mask::") and ln[12:] in env.secrets() for ln in rest)
    for secret in env.secrets():
        assert not any(secret in ln for ln in rest), "a secret outside ::add-mask::"
    return rest


def groups(lines: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    i = 0
    while i < len(lines):
        if lines[i].startswith("::group::"):
            end = lines.index("::endgroup::", i)
            out[lines[i].removeprefix("::group::")] = lines[i + 1:end]
            i = end
        i += 1
    return out


def files_have_no_secret(env: Env) -> None:
    for f in (env.runner.root / "files").iterdir():
        if f.suffix != ".sh":
            text = f.read_text()
            for secret in env.secrets():
                assert secret not in text, f"{secret!r} in {f.name}"


def test_ship_in_github_actions(gha: Env) -> None:
    r = gha.deploy()
    assert r.returncode == 0, r.stdout[-5000:]
    rest = check_masks(gha, r.stdout)
    host = gha.info.hosts[0].name
    g = groups(rest)
    assert len(g) == 1
    (title, body), = g.items()
    assert re.fullmatch(rf"{host}: deployed in \d+\.\ds", title)
    text = "\n".join(body)
    assert "compose up" in text and "wait healthy" in text
    assert all(ln.startswith("[") for ln in body)
    assert not [ln for ln in rest if ln.startswith("::error")]
    assert "\x1b[" not in r.stdout  # no colours, no live display
    release = r.outputs["release"]
    assert r.outputs == {"release": release, "result": "success"} and release
    assert gha.runner.action_outputs() == r.outputs
    md = gha.runner.summary.read_text()
    assert md.startswith("### ✅ deployer ship flaskpg → sandbox: success")
    assert f"Release `{release}`" in md
    assert re.search(rf"\| {host} \| ✅ deployed \| {release} \| \d+\.\ds \|", md)
    assert "| web |" in md and "| postgres |" in md and "@sha256:" in md
    files_have_no_secret(gha)


def test_failed_ship_in_github_actions(gha: Env) -> None:
    gha.set_vars(healthy=False)
    try:
        r = gha.deploy()
    finally:
        gha.set_vars()
    assert r.returncode == 1, r.stdout[-5000:]
    rest = check_masks(gha, r.stdout)
    host = gha.info.hosts[0].name
    g = groups(rest)
    (title, body), = g.items()
    assert re.fullmatch(rf"{host}: rolled back in \d+\.\ds", title)
    assert any("last 30 log lines of web" in ln for ln in body)  # inside the group
    errors = [ln for ln in rest if ln.startswith("::error")]
    assert len(errors) == 1
    assert errors[0].startswith(f"::error title=deployer%3A {host}::rolled back: ")
    assert "web" in errors[0]
    # one line: line breaks in the message are escaped
    assert "\n" not in errors[0] and "\r" not in errors[0]
    assert r.outputs["result"] == "failure"
    assert gha.runner.action_outputs()["result"] == "failure"
    md = gha.runner.summary.read_text()
    assert md.startswith("### ❌ deployer ship flaskpg → sandbox: failure")
    assert re.search(rf"\| {host} \| ↩️ rolled back \|", md)
    files_have_no_secret(gha)
