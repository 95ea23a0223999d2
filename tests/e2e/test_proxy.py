"""Issue 16 end to end: zero-downtime redeploys behind the edge proxy, on one
sandbox host (Docker preinstalled) with the Debian-built Caddy stand-in,
mirrored into the sandbox registry like any image.

The tests build on each other, in order: a first ship starts the proxy; then,
each under load (4 concurrent clients on the host for the whole operation,
two of them always in a 2-second request, so requests are in flight at the
moment of the switch), with 0 failed requests:

- a changed ship (v2);
- a failing ship (v3's healthcheck fails): exit 1, and no request is ever
  answered by v3;
- a rollback (back to v1);
- a ship with ``replicas: 2`` (an inventory override of ``proxy``);
- a proxy config change: a new route (``/api`` to a new service).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.load import Answer, Load, request

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
APP = Path(__file__).parent / "apps" / "proxyapp"
BASE_IMAGE = os.environ.get("DEPLOYER_SANDBOX_BASE_IMAGE", "debian:bookworm")
MARK = "\n# test overrides\n"
WEB_ROUTE = {"service": "web", "port": 8000, "drain_timeout": 10,
             "health": {"path": "/healthz", "interval": 1, "timeout": 3}}


class App:
    def __init__(self, root: Path, info: Any) -> None:
        self.root = root
        self.info = info
        self.host = info.hosts[0]
        self.env = {**os.environ, "NO_COLOR": "1"}
        self.env.pop("GITHUB_ACTIONS", None)

    def deployer(self, *args: str, check: int | None = 0) -> dict[str, Any]:
        p = subprocess.run([sys.executable, "-m", "deployer", "-C", str(self.root), "-o", "json",
                            *args], capture_output=True, text=True, env=self.env, timeout=900)
        if check is not None:
            assert p.returncode == check, f"exit {p.returncode}\n{p.stdout}\n{p.stderr[-4000:]}"
        assert "Traceback" not in p.stderr, p.stderr[-4000:]
        return dict(json.loads(p.stdout))

    def configure(self, *, routes: list[dict[str, Any]] | None = None, **vars: Any) -> None:
        """The inventory's vars, and a ``proxy`` override when ``routes``."""
        inv = self.root / "inventories" / "sandbox.yaml"
        base = inv.read_text().split(MARK)[0]
        text = base + MARK + "vars: " + json.dumps(vars) + "\n"
        if routes is not None:
            text += "proxy: " + json.dumps({"routes": routes}) + "\n"
        inv.write_text(text)

    def sh(self, script: str) -> str:
        return subprocess.run(["docker", "exec", self.host.container, "sh", "-c", script],
                              capture_output=True, text=True, check=True).stdout

    def web_containers(self) -> list[str]:
        out = self.sh("docker ps -q --filter label=com.docker.compose.project=proxyapp "
                      "--filter label=com.docker.compose.service=web")
        return out.split()

    def get(self, path: str = "/") -> Answer:
        return request(self.host.address, path)


def result(report: dict[str, Any]) -> str:
    (h,) = report["hosts"]
    return str(h["result"])


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    from deployer.sandbox import manager

    root = tmp_path_factory.mktemp("proxyapp")
    shutil.copytree(APP, root, dirs_exist_ok=True)
    try:
        info = manager.up(root, hosts=1, base_image=BASE_IMAGE, with_docker=True)
        yield App(root, info)
    finally:
        manager.down(root)


def test_first_ship_starts_the_proxy(app: App) -> None:
    app.configure(version="v1")
    report = app.deployer("ship", "sandbox")
    assert result(report) == "deployed", report
    a = app.get()
    assert a.ok and a.version == "v1", a
    # The proxy publishes the port; the app's container publishes none.
    assert app.sh("docker ps --format '{{.Names}} {{.Ports}}' | grep web | grep -c -- '->' "
                  "|| true").strip() == "0"
    assert "0.0.0.0:80->" in app.sh("docker ps --format '{{.Ports}}' --filter name=deployer-proxy")


def test_changed_ship_drops_no_request(app: App) -> None:
    app.configure(version="v2")
    with Load([app.host.address]) as load:
        report = app.deployer("ship", "sandbox")
    assert result(report) == "deployed", report
    load.assert_clean()
    assert load.versions() == {"v1", "v2"}
    load.assert_switched_in_flight("v1", "v2")
    assert len(app.web_containers()) == 1  # the old container is gone


def test_failing_ship_never_serves_the_new_release(app: App) -> None:
    before = app.web_containers()
    app.configure(version="v3", healthy=False)
    with Load([app.host.address]) as load:
        report = app.deployer("ship", "sandbox", check=1)
    assert result(report) == "rolled back", report
    load.assert_clean()
    assert load.versions() == {"v2"}, load.versions()  # not one request answered by v3
    after = app.web_containers()
    assert after == before, (before, after)  # the new ones removed, the old untouched


def test_rollback_drops_no_request(app: App) -> None:
    app.configure(version="v2")
    with Load([app.host.address]) as load:
        report = app.deployer("rollback", "sandbox")
    assert result(report) == "rolled back", report
    load.assert_clean()
    load.assert_switched_in_flight("v2", "v1")
    assert app.get().version == "v1"


def test_ship_with_two_replicas(app: App) -> None:
    app.configure(version="v4", routes=[{**WEB_ROUTE, "replicas": 2}])
    with Load([app.host.address]) as load:
        report = app.deployer("ship", "sandbox")
    assert result(report) == "deployed", report
    load.assert_clean()
    load.assert_switched_in_flight("v1", "v4")
    assert len(app.web_containers()) == 2
    served = {a.served_by for a in load.answers if a.version == "v4"}
    assert len(served) == 2, served  # both replicas take requests


def test_new_route_drops_no_request(app: App) -> None:
    api = {"service": "api", "port": 8000, "path_prefix": "/api",
           "health": {"path": "/healthz"}, "drain_timeout": 5}
    app.configure(version="v5", with_api=True, routes=[{**WEB_ROUTE, "replicas": 2}, api])
    with Load([app.host.address]) as load:
        report = app.deployer("ship", "sandbox")
    assert result(report) == "deployed", report
    load.assert_clean()
    load.assert_switched_in_flight("v4", "v5")
    a = app.get("/api/x")
    assert a.ok and a.role == "api" and a.version == "v5", a
    assert app.get("/").role == "web"
