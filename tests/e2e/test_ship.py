"""``deployer ship`` end to end on the sandbox with examples/flask-postgres:
fresh hosts (no Docker) -> bootstrap -> upload -> compose up -> healthy,
then no-op, change, rollback, a failing release, the lock, an interrupted
upload, and no secret in any output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import copy_tracked

from e2e.helpers import deployer_env, results, run_deployer

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "flask-postgres"
DB_PASSWORD = "pg-Secret-e2e-4711"
WEB_PORT = 8000
OUTPUTS: list[str] = []


class Ship:
    def __init__(self, project: Path, info: object) -> None:
        self.project = project
        self.info = info
        self.env = deployer_env({"DB_PASSWORD": DB_PASSWORD})

    def run(
        self, *args: str, check: int | None = 0, timeout: float = 900
    ) -> subprocess.CompletedProcess[str]:
        p = run_deployer(self.project, *args, env=self.env, check=None, timeout=timeout)
        OUTPUTS.append(p.stdout + p.stderr)
        if check is not None:
            assert p.returncode == check, f"exit {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p

    def json(self, *args: str, check: int | None = 0) -> dict:
        p = self.run("-o", "json", *args, check=check)
        return json.loads(p.stdout)

    def set_vars(self, **values: object) -> None:
        inv = self.project / "inventories" / "sandbox.yaml"
        base = inv.read_text().split("\n# test vars\n")[0]
        lines = [f"  {k}: {json.dumps(v)}" for k, v in values.items()]
        inv.write_text(base + "\n# test vars\nvars:\n" + "\n".join(lines) + "\n")

    def sh(self, host: object, *cmd: str) -> str:
        return subprocess.run(["docker", "exec", host.container, *cmd],  # type: ignore[attr-defined]
                              capture_output=True, text=True, check=True).stdout


BASE_VARS = dict(greeting="hello-one", web_port=WEB_PORT, workers=1, db_name="flaskpg",
                 db_user="flaskpg", db_password="${DB_PASSWORD}")


@pytest.fixture(scope="module")
def ship(tmp_path_factory: pytest.TempPathFactory) -> Ship:
    from deployer.sandbox import manager

    project = copy_tracked(EXAMPLE, tmp_path_factory.mktemp("shipproj"))
    # The release id in a rendered file, as users want it for error trackers
    # and /version endpoints: the no-op must still hold (test_second_ship_is_noop).
    conf = project / "templates" / "docker_config.py.j2"
    conf.write_text(conf.read_text() + "RELEASE = {{ release | tojson }}\n")
    # Short health timeout so the failing-release test stays quick.
    cfg = project / "deployer.yaml"
    cfg.write_text(cfg.read_text().replace("health_timeout: 180", "health_timeout: 90"))
    info = manager.up(project, hosts=2, base_image=os.environ.get(
        "DEPLOYER_SANDBOX_BASE_IMAGE", "debian:bookworm"))
    s = Ship(project, info)
    s.set_vars(**BASE_VARS)
    yield s
    manager.down(project)


def get(host: object, path: str = "/") -> dict:
    url = f"http://{host.address}:{WEB_PORT}{path}"  # type: ignore[attr-defined]
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def post(host: object, path: str, data: dict) -> dict:
    req = urllib.request.Request(
        f"http://{host.address}:{WEB_PORT}{path}",  # type: ignore[attr-defined]
        data=json.dumps(data).encode(), headers={"Content-Type": "application/json"},
        method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_first_ship_from_fresh_hosts(ship: Ship) -> None:
    hosts = ship.info.hosts  # type: ignore[attr-defined]
    assert "docker" not in ship.sh(hosts[0], "sh", "-c", "command -v docker || echo none")
    report = ship.json("ship", "sandbox")
    assert results(report) == {h.name: "deployed" for h in hosts}
    for h in report["hosts"]:
        assert h["connections"] == 1
    for h in hosts:
        conf = ship.sh(h, "cat", "/opt/flaskpg/current/docker_config.py")
        assert f'RELEASE = "{report["release"]}"' in conf
        body = get(h)
        assert body["greeting"] == "hello-one"
        assert "PostgreSQL" in body["database"]  # answered by PostgreSQL...
        assert body["notes"] == 0  # ...from the table the migration created


def test_second_ship_is_noop(ship: Ship) -> None:
    deployed = ship.sh(ship.info.hosts[0], "readlink", "/opt/flaskpg/current")  # type: ignore[attr-defined]
    report = ship.json("ship", "sandbox")
    # A new release id, rendered into docker_config.py: still nothing to do.
    assert report["release"] not in deployed
    assert set(results(report).values()) == {"unchanged"}
    for h in report["hosts"]:
        steps = [s["step"] for s in h["steps"]]
        assert "compose up" not in steps and "pull images" not in steps
        assert h["connections"] == 1


def test_skip_build_uses_pushed_images_or_refuses(ship: Ship) -> None:
    first = ship.json("ship", "sandbox")
    tag = first["release"].split("-", 1)[1]
    again = ship.json("ship", "sandbox", "--skip-build", "--tag", tag)
    assert set(results(again).values()) == {"unchanged"}  # same digests, pinned from the registry
    assert again["images"] == first["images"]
    missing = ship.run("ship", "sandbox", "--skip-build", "--tag", "never-pushed", check=1)
    assert "never-pushed is not in the registry" in missing.stderr
    assert "Traceback" not in missing.stderr
    assert "sandbox-1:" not in missing.stderr  # no host was touched


def test_change_then_rollback_keeps_data(ship: Ship) -> None:
    h0 = ship.info.hosts[0]  # type: ignore[attr-defined]
    before = ship.json("releases", "sandbox")[h0.name]
    post(h0, "/notes", {"body": "survives"})
    ship.set_vars(**{**BASE_VARS, "greeting": "hello-two"})
    report = ship.json("ship", "sandbox")
    assert set(results(report).values()) == {"deployed"}
    body = get(h0)
    assert body["greeting"] == "hello-two"
    assert "survives" in [n["body"] for n in body["latest"]]
    after = ship.json("releases", "sandbox")[h0.name]
    assert after["current"] != before["current"]
    rb = ship.json("rollback", "sandbox")
    assert set(results(rb).values()) == {"rolled back"}
    assert {h["rolled_back_from"] for h in rb["hosts"]} == {after["current"]}
    body = get(h0)
    assert body["greeting"] == "hello-one"
    assert "survives" in [n["body"] for n in body["latest"]]
    assert ship.json("releases", "sandbox")[h0.name]["current"] == before["current"]


def test_unhealthy_release_is_rolled_back(ship: Ship) -> None:
    h0 = ship.info.hosts[0]  # type: ignore[attr-defined]
    current = ship.json("releases", "sandbox")[h0.name]["current"]
    try:
        ship.set_vars(**{**BASE_VARS, "healthy": False})
        p = ship.run("-o", "json", "ship", "sandbox", check=1)
        report = json.loads(p.stdout)
        assert set(results(report).values()) == {"rolled back"}
        assert any("web" in (h.get("error") or "") for h in report["hosts"])
        assert "last 30 log lines of web" in p.stderr
        assert get(h0)["greeting"] == "hello-one"  # the old version keeps answering
        assert ship.json("releases", "sandbox")[h0.name]["current"] == current
    finally:
        ship.set_vars(**BASE_VARS)


def test_lock_refuses_concurrent_ship_and_unlock_releases(ship: Ship) -> None:
    ship.run("lock", "sandbox", "--message", "maintenance")
    ship.set_vars(**{**BASE_VARS, "greeting": "while-locked"})
    try:
        p = ship.run("ship", "sandbox", check=1)
        assert "locked by" in p.stderr and "maintenance" in p.stderr
    finally:
        ship.run("unlock", "sandbox")
        ship.set_vars(**BASE_VARS)
    report = ship.json("ship", "sandbox")
    assert set(results(report).values()) <= {"unchanged", "deployed"}


def test_killed_upload_leaves_no_incomplete_release(ship: Ship) -> None:
    h0 = ship.info.hosts[0]  # type: ignore[attr-defined]
    current = ship.json("releases", "sandbox")[h0.name]["current"]
    big = ship.project / "templates" / "big.j2"
    # 40 MB, within the template sandbox's bound on one '*' (a million items).
    big.write_text("{% for _ in range(40) %}{{ 'x' * 1000000 }}{% endfor %}\n")
    cfg = ship.project / "deployer.yaml"
    original = cfg.read_text()
    cfg.write_text(original.replace(
        "compose_file: docker-compose.yaml",
        "  - template: templates/big.j2\n    dest: big.bin\ncompose_file: docker-compose.yaml"))
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deployer", "-C", str(ship.project), "ship", "sandbox",
             "--limit", h0.name], env=ship.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True)
        deadline = time.monotonic() + 300
        seen_partial = False
        while time.monotonic() < deadline and proc.poll() is None:
            out = ship.sh(h0, "sh", "-c", "ls /opt/flaskpg/releases")
            if ".partial" in out:
                seen_partial = True
                break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        OUTPUTS.append(proc.communicate()[0] or "")
        assert seen_partial, "the upload was never caught in flight"
        listing = ship.sh(h0, "sh", "-c", "cd /opt/flaskpg/releases && for d in *; do "
                          "if [ -f \"$d/manifest.json\" ] || [ \"${d%.partial}\" != \"$d\" ]; "
                          "then echo ok $d; else echo incomplete $d; fi; done")
        assert "incomplete" not in listing, listing
        assert ship.sh(h0, "readlink", "/opt/flaskpg/current").strip().endswith(current)
        assert get(h0)["greeting"] == "hello-one"
    finally:
        cfg.write_text(original)
        ship.run("unlock", "sandbox")  # the killed run could not release its lock


def test_day2_status_logs_exec(ship: Ship) -> None:
    hosts = ship.info.hosts  # type: ignore[attr-defined]
    status = ship.json("status", "sandbox")
    for h in hosts:
        rows = {r["service"]: r for r in status[h.name]}
        assert rows["web"]["status"] == "running" and rows["web"]["health"] == "healthy"
        assert rows["db"]["health"] == "healthy"
        assert rows["migrate"]["status"] == "exited" and rows["migrate"]["exit_code"] == 0
    logs = ship.run("logs", "sandbox", "web", "--tail", "5")
    lines = [line for line in logs.stdout.splitlines() if " | " in line]
    prefixes = {line.split(" | ", 1)[0].strip() for line in lines}
    assert prefixes == {h.name for h in hosts}
    ex = ship.run("exec", "sandbox", "--limit", hosts[1].name, "web", "--",
                  "python3", "-c", "import socket; print('answer', 6 * 7)")
    assert f"{hosts[1].name} | answer 42" in ex.stdout
    failing = ship.run("exec", "sandbox", "--limit", hosts[0].name, "web", "--", "false",
                       check=None)
    assert failing.returncode == 1


def test_no_secret_in_any_output(ship: Ship) -> None:
    reg_pw = ship.info.registry.password  # type: ignore[attr-defined]
    assert OUTPUTS, "no output captured"
    for text in OUTPUTS:
        assert DB_PASSWORD not in text
        assert reg_pw not in text
