"""Release health records, rollback and prune rules, and two environments
of one app on one host, end to end on one sandbox host with Docker
preinstalled (issue 15, review items 5, 6 and 11).

The tests run in order on one module-scoped sandbox, each building on the
last:

1. Review item 5 exactly: v1, v2 good, v3 failing its healthcheck, v4
   stopped before ``up`` (its pull fails), v5 good, ``keep_releases: 2``:
   ``releases`` says which failed and which never ran, ``rollback --to`` v3
   or v4 is refused, prune keeps v5 and v2 (v1 goes although a container
   wrote root-owned files into it), and ``rollback`` goes to v2.
2. Two environments: ``staging`` into the same deploy dir is refused; with
   its own ``deploy_dir`` but the same compose project, refused; with both
   its own ``deploy_dir`` and ``project_name`` it runs next to the first
   environment, each with its own named volume, and a later ship of one
   leaves the other running.

The app is ``tests/e2e/apps/rollapp`` plus a named volume and an optional
service whose image cannot be pulled.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import copy_tracked

from e2e.helpers import deployer_env, run_deployer

pytestmark = pytest.mark.e2e

ROLLAPP = Path(__file__).parent / "apps" / "rollapp"
BASE_IMAGE = os.environ.get("DEPLOYER_SANDBOX_BASE_IMAGE", "debian:bookworm")
PROD_PORT, STAGING_PORT = 8000, 8001
# Refused at once (nothing listens on port 9 of the host itself).
UNPULLABLE = "127.0.0.1:9/rollapp/missing:never"

EXTRA_COMPOSE = """\
      - data:/data
{% if unpullable | default("") %}
  sidecar:
    image: {{ unpullable | tojson }}
    restart: unless-stopped
{% endif %}
volumes:
  data: {}
"""


class App:
    """The app's copy next to its sandbox, driven through the CLI."""

    def __init__(self, root: Path, info: Any) -> None:
        self.root = root
        self.info = info
        self.host = info.hosts[0]
        self.env = deployer_env()
        inv = root / "inventories" / "sandbox.yaml"
        # What `sandbox up` wrote above its hosts (ssh, registry).
        self.base = inv.read_text().split("\ngroups:\n")[0].split("\nhosts:\n")[0] + "\n"

    def inventory(self, env: str, port: int, **extra: Any) -> None:
        vars_ = {"web_port": port, **{k: v for k, v in extra.items()
                                      if k not in ("deploy_dir", "project_name")}}
        doc: dict[str, Any] = {"vars": vars_,
                               "hosts": {self.host.name: {"address": self.host.address}}}
        doc.update({k: v for k, v in extra.items() if k in ("deploy_dir", "project_name")})
        (self.root / "inventories" / f"{env}.yaml").write_text(
            self.base + yaml.safe_dump(doc, sort_keys=False))

    def run(self, *args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
        p = run_deployer(self.root, *args, env=self.env, check=check)
        assert "Traceback" not in p.stderr
        return p

    def json(self, *args: str, check: int = 0) -> dict[str, Any]:
        p = self.run("-o", "json", *args, check=check)
        return json.loads(p.stdout)  # type: ignore[no-any-return]

    def ship(self, env: str = "sandbox", check: int = 0) -> dict[str, Any]:
        report = self.json("ship", env, check=check)
        (host,) = report["hosts"]
        return host  # type: ignore[no-any-return]

    def sh(self, script: str, check: bool = True) -> str:
        p = subprocess.run(["docker", "exec", self.host.container, "sh", "-c", script],
                           capture_output=True, text=True, check=False)
        if check:
            assert p.returncode == 0, p.stderr
        return p.stdout

    def web(self, project: str) -> str:
        """The web container of compose project ``project`` (compose v1 and
        v2 name containers differently; both label them)."""
        cid = self.sh(f"docker ps -q --filter label=com.docker.compose.project={project} "
                      "--filter label=com.docker.compose.service=web").split()
        assert len(cid) == 1, cid
        return cid[0]

    def get(self, port: int) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://{self.host.address}:{port}/", timeout=10) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    from deployer.sandbox import manager

    root = copy_tracked(ROLLAPP, tmp_path_factory.mktemp("relapp"))
    cfg = root / "deployer.yaml"
    cfg.write_text(cfg.read_text().replace("keep_releases: 5", "keep_releases: 2"))
    tpl = root / "templates" / "docker-compose.yaml.j2"
    text = tpl.read_text()
    anchor = "      - ./config.json:/app/config.json:ro\n"
    assert anchor in text
    head, tail = text.split(anchor)
    tpl.write_text(head + anchor + EXTRA_COMPOSE.split("{%", 1)[0]
                   + tail + "{%" + EXTRA_COMPOSE.split("{%", 1)[1])
    try:
        info = manager.up(root, hosts=1, base_image=BASE_IMAGE, with_docker=True)
        yield App(root, info)
    finally:
        manager.down(root)


STATE: dict[str, Any] = {}


def test_review_item_5_rollback_and_prune_only_trust_releases_that_passed(app: App) -> None:
    d = "/opt/rollapp"
    app.inventory("sandbox", PROD_PORT, greeting="v1")
    h = app.ship()
    assert h["result"] == "deployed", h
    v1 = h["release"]
    assert app.sh(f"id -u {app.info.ssh_user}").strip() != "0"  # the SSH user is not root
    # A container writes root-owned files into the release (a bind-mounted
    # release path): the SSH user alone cannot remove them.
    image = app.sh(f"docker inspect -f '{{{{.Config.Image}}}}' {app.web('rollapp')}").strip()
    app.sh(f"docker run --rm -v {d}/releases/{v1}:/r --entrypoint sh {image} "
           "-c 'mkdir /r/cache && echo x > /r/cache/written-as-root && chmod 700 /r/cache'")
    assert app.sh(f"stat -c %U {d}/releases/{v1}/cache").strip() == "root"

    app.inventory("sandbox", PROD_PORT, greeting="v2")
    v2 = app.ship()["release"]
    app.inventory("sandbox", PROD_PORT, greeting="v3", healthy=False)
    h = app.ship(check=1)
    assert h["result"] == "rolled back" and h["release"] == v2, h
    v3 = h["rolled_back_from"]
    app.inventory("sandbox", PROD_PORT, greeting="v4", unpullable=UNPULLABLE)
    h = app.ship(check=1)
    assert h["result"] == "failed" and "pull" in h["error"], h
    assert app.get(PROD_PORT)["greeting"] == "v2"
    listed = app.sh(f"ls {d}/releases").split()
    (v4,) = [r for r in listed if r not in (v1, v2, v3)]

    rel = app.json("releases", "sandbox")[app.host.name]
    assert rel["current"] == v2
    assert rel["health"] == {v1: "passed", v2: "passed", v3: "failed", v4: "never ran"}
    text = app.run("releases", "sandbox").stdout
    assert f"{v4}  never ran" in text and f"* {v2}  passed" in text
    for to, why in ((v4, "never ran"), (v3, "failed its health gate")):
        h = app.json("rollback", "sandbox", "--to", to, check=1)["hosts"][0]
        assert why in h["error"] and h["release"] == v2, h
    assert app.get(PROD_PORT)["greeting"] == "v2"

    app.inventory("sandbox", PROD_PORT, greeting="v5")
    h = app.ship()
    assert h["result"] == "deployed", h
    v5 = h["release"]
    # keep_releases 2: v5 (current) and v2 (the newest that passed before
    # it); v4 never ran and v3 failed, so they are not kept for rollback,
    # and v1 went, root-owned files and all, with no partial left.
    assert sorted(app.sh(f"ls -A {d}/releases").split()) == sorted([v2, v5])
    assert app.json("releases", "sandbox")[app.host.name]["health"] == {
        v2: "passed", v5: "passed"}

    rb = app.json("rollback", "sandbox")["hosts"][0]
    assert (rb["result"], rb["release"], rb["rolled_back_from"]) == ("rolled back", v2, v5)
    assert app.get(PROD_PORT)["greeting"] == "v2"
    STATE["prod"] = v2


def test_two_environments_on_one_host(app: App) -> None:
    app.sh(f"docker exec {app.web('rollapp')} sh -c 'echo prod > /data/who'")
    # staging, same host, nothing else set: same dir, same project
    app.inventory("staging", STAGING_PORT, greeting="staging")
    h = app.ship("staging", check=1)
    assert h["result"] == "failed"
    err = h["error"]
    assert f"/opt/rollapp on {app.host.name} belongs to environment sandbox" in err, err
    assert "not to staging of rollapp" in err, err
    assert "give staging its own deploy_dir and project_name" in app.run(
        "ship", "staging", check=1).stderr
    # its own deploy_dir, but the same compose project: still refused, and
    # before anything was created
    app.inventory("staging", STAGING_PORT, greeting="staging", deploy_dir="/opt/rollapp-staging")
    err = app.ship("staging", check=1)["error"]
    assert "compose project rollapp on" in err and "environment sandbox in /opt/rollapp" in err
    assert app.sh("test -e /opt/rollapp-staging || echo absent").strip() == "absent"
    assert app.get(PROD_PORT)["greeting"] == "v2"
    assert app.json("releases", "sandbox")[app.host.name]["current"] == STATE["prod"]

    # both set: side by side
    app.inventory("staging", STAGING_PORT, greeting="staging",
                  deploy_dir="/opt/rollapp-staging", project_name="rollapp-staging")
    assert app.ship("staging")["result"] == "deployed"
    assert app.get(STAGING_PORT)["greeting"] == "staging"
    assert app.get(PROD_PORT)["greeting"] == "v2"
    volumes = app.sh("docker volume ls -q").split()
    assert {"rollapp_data", "rollapp-staging_data"} <= set(volumes)
    staging = app.web("rollapp-staging")
    assert app.sh(f"docker exec {staging} sh -c 'cat /data/who 2>/dev/null || true'").strip() == ""
    app.sh(f"docker exec {staging} sh -c 'echo staging > /data/who'")

    # a ship of each leaves the other's containers and data alone
    app.inventory("sandbox", PROD_PORT, greeting="v6")
    assert app.ship()["result"] == "deployed"
    app.inventory("staging", STAGING_PORT, greeting="staging-2",
                  deploy_dir="/opt/rollapp-staging", project_name="rollapp-staging")
    assert app.ship("staging")["result"] == "deployed"
    assert app.get(PROD_PORT)["greeting"] == "v6"
    assert app.get(STAGING_PORT)["greeting"] == "staging-2"
    assert app.sh(f"docker exec {app.web('rollapp')} cat /data/who").strip() == "prod"
    assert app.sh(f"docker exec {app.web('rollapp-staging')} cat /data/who").strip() == "staging"
    owner = app.sh("cat /opt/rollapp-staging/.deployer-owner")
    assert owner == "app=rollapp\nenv=staging\nproject=rollapp-staging\n"
    # rollback of staging stays in staging's dir and project
    rb = app.json("rollback", "staging")["hosts"][0]
    assert rb["result"] == "rolled back"
    assert app.get(STAGING_PORT)["greeting"] == "staging"
    assert app.get(PROD_PORT)["greeting"] == "v6"
