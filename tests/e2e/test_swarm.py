"""``target: swarm`` end to end: 3 sandbox hosts with Docker and no swarm.

In order, each test building on the last: ``bootstrap`` forms the swarm
(1 manager, 2 workers), and run again changes nothing; ship serves on every
node, with the local hooks around it; ``plan --diff`` then and a second
ship are ``unchanged``; a changed config file rolls the service that mounts
it (and only it) on every node, as ``plan --diff`` said; a failing
migration stops the ship with nothing updated; a release whose healthcheck
fails is rolled back by swarm (exit 1, the failing service named, the old
version serving on every node); ``rollback``; ``status``; ``logs``; ``exec``
on the node where the task runs.

Services publish in host mode: the sandbox's kernel has no IPVS, so the
ingress routing mesh does not work here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

BASE_IMAGE = os.environ.get("DEPLOYER_SANDBOX_BASE_IMAGE", "debian:bookworm")
PORT = 8000

DEPLOYER_YAML = """\
app: swarmapp
images:
  py: {repository: swarmapp/py, source: "python:3.12-slim"}
files:
  - {template: templates/docker-compose.yaml.j2, dest: docker-compose.yaml}
  - {template: templates/index.html.j2, dest: site/index.html}
health_timeout: 60
hooks:
  pre_deploy: [sh, hook.sh, pre_deploy]
  post_deploy: [sh, hook.sh, post_deploy]
  on_failure: [sh, hook.sh, on_failure]
"""
# in .deployer/: deployer's own folder is not part of the tag
HOOK = 'mkdir -p .deployer && echo "$1 $DEPLOYER_RELEASE" >> .deployer/hooks.log\n'

COMPOSE = """\
services:
  migrate:
    image: {{ images.py }}
    command: ["python", "-c", "import sys; print('migrating'); sys.exit({{ migrate_exit }})"]
    labels: {deployer.oneshot: "true"}
  web:
    image: {{ images.py }}
    command: ["python", "-m", "http.server", "8000", "-d", "/srv"]
    volumes: ["./site/index.html:/srv/index.html:ro"]
    ports: [{target: 8000, published: 8000, mode: host}]
    healthcheck:
      test: ["CMD", "bash", "-c", "{{ health }}"]
      interval: 1s
      timeout: 10s
      retries: 2
    deploy: {mode: global}
  worker:
    image: {{ images.py }}
    command: ["python", "-c", "import time; time.sleep(10**9)"]
"""

# bash, not python: a probe a second per task is a visible share of CI's 2 cores.
HEALTHY = ("exec 3<>/dev/tcp/127.0.0.1/8000 && printf 'GET / HTTP/1.0\\\\r\\\\n\\\\r\\\\n' >&3"
           " && head -n 1 <&3 | grep -q ' 200 '")
UNHEALTHY = "exit 1"


class App:
    def __init__(self, root: Path, info: Any) -> None:
        self.root = root
        self.info = info
        self.env = {**os.environ, "NO_COLOR": "1"}
        self.env.pop("GITHUB_ACTIONS", None)
        self.outputs: list[str] = []

    def run(self, *args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([sys.executable, "-m", "deployer", "-C", str(self.root), *args],
                           capture_output=True, text=True, env=self.env, timeout=900)
        self.outputs.append(p.stdout + p.stderr)
        if check is not None:
            assert p.returncode == check, f"exit {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p

    def json(self, *args: str, check: int | None = 0) -> dict[str, Any]:
        p = self.run("-o", "json", *args, check=check)
        return json.loads(p.stdout)

    def set_vars(self, version: str, *, migrate_exit: int = 0, health: str = HEALTHY) -> None:
        inv = self.root / "inventories" / "sandbox.yaml"
        base = inv.read_text().split("\n# test vars\n")[0]
        values = {"version": version, "migrate_exit": migrate_exit, "health": health}
        lines = "".join(f"  {k}: {json.dumps(v)}\n" for k, v in values.items())
        inv.write_text(base + "\n# test vars\ntarget: swarm\nvars:\n" + lines)

    def sh(self, host: Any, command: str) -> str:
        return subprocess.run(["docker", "exec", "-u", "deploy", host.container, "sh", "-c",
                               command], capture_output=True, text=True, check=True).stdout

    @property
    def manager(self) -> Any:
        return self.info.hosts[0]

    def current(self) -> str:
        return self.sh(self.manager, "readlink /opt/swarmapp/current").strip().rsplit("/", 1)[-1]

    def hooks(self) -> list[str]:
        """What the local hooks wrote (in .deployer/: not part of the tag)."""
        log = self.root / ".deployer" / "hooks.log"
        return log.read_text().splitlines() if log.exists() else []

    def task_ids(self, service: str) -> set[str]:
        out = self.sh(self.manager, f"docker service ps -q --filter desired-state=running "
                      f"swarmapp_{service}")
        return set(out.split())


def serves(host: Any) -> str:
    with urllib.request.urlopen(f"http://{host.address}:{PORT}/", timeout=10) as r:
        return r.read().decode().strip()


def every_node(app: App) -> set[str]:
    return {serves(h) for h in app.info.hosts}


def only(report: dict[str, Any]) -> dict[str, Any]:
    (h,) = report["hosts"]
    return h


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    from deployer.sandbox import manager

    root = tmp_path_factory.mktemp("swarmapp")
    (root / "templates").mkdir()
    (root / "templates" / "docker-compose.yaml.j2").write_text(COMPOSE)
    (root / "templates" / "index.html.j2").write_text("{{ version }}\n")
    (root / "deployer.yaml").write_text(DEPLOYER_YAML)
    (root / "hook.sh").write_text(HOOK)
    try:
        info = manager.up(root, hosts=3, base_image=BASE_IMAGE, with_docker=True)
        a = App(root, info)
        a.set_vars("v1")
        yield a
    finally:
        manager.down(root)


def test_bootstrap_forms_the_swarm_and_run_again_changes_nothing(app: App) -> None:
    for h in app.info.hosts:
        assert app.sh(h, "docker info --format '{{.Swarm.LocalNodeState}}'").strip() == "inactive"
    h = only(app.json("bootstrap", "sandbox"))
    assert h["host"] == "sandbox-1" and h["result"] == "ok", h
    assert "swarm init on sandbox-1" in h["detail"]
    for worker in ("sandbox-2", "sandbox-3"):
        assert f"{worker} joined as worker" in h["detail"], h
    ls = "docker node ls --format '{{.ID}} {{.Hostname}} {{.ManagerStatus}}'"
    nodes = app.sh(app.manager, ls)
    assert sorted(ln.split(" ", 1)[1] for ln in nodes.splitlines()) == [
        "sandbox-1 Leader", "sandbox-2 ", "sandbox-3 "]
    again = only(app.json("bootstrap", "sandbox"))
    assert again["result"] == "ok" and again["detail"].endswith(
        "swarm: all 3 nodes already members"), again
    assert app.sh(app.manager, ls) == nodes  # the same node ids: nothing re-joined
    # the join tokens are never printed
    token = app.sh(app.manager, "docker swarm join-token -q worker").strip()
    assert token and not any(token in o for o in app.outputs)


def test_first_ship_serves_on_every_node_with_the_local_hooks(app: App) -> None:
    report = app.json("ship", "sandbox")
    h = only(report)
    assert h["host"] == "sandbox-1" and h["result"] == "deployed", report
    assert every_node(app) == {"v1"}
    assert app.current() == report["release"]
    assert app.hooks() == [f"pre_deploy {report['release']}", f"post_deploy {report['release']}"]
    rel = f"/opt/swarmapp/releases/{report['release']}"
    assert app.sh(app.manager, f"stat -c %a {rel}/stack.yaml").strip() == "600"
    # the config is named by its content
    configs = app.sh(app.manager, "docker config ls --format '{{.Name}}'").split()
    assert [c for c in configs if c.startswith("swarmapp_site_index.html_")] == configs


def test_plan_diff_and_a_second_ship_are_unchanged(app: App) -> None:
    d = only(app.json("plan", "sandbox", "--diff"))
    assert d["unchanged"] is True and d["current"] == app.current(), d
    before = app.task_ids("web")
    assert only(app.json("ship", "sandbox"))["result"] == "unchanged"
    assert app.task_ids("web") == before


def test_a_changed_config_file_rolls_the_service_that_mounts_it(app: App) -> None:
    web, worker = app.task_ids("web"), app.task_ids("worker")
    old = app.sh(app.manager, "docker config ls --format '{{.Name}}'").split()
    app.set_vars("v2")
    d = only(app.json("plan", "sandbox", "--diff"))
    svc = d["stack"]["services"]
    assert svc["update"] == ["web", "worker"], d
    # the new tag is not pushed yet: plan cannot know the images stay the same
    unknown = "image not in the registry yet: it updates only if the image ship builds differs"
    assert svc["why"] == {"web": f"config site_index.html changed; {unknown}",
                          "worker": unknown}, d
    (created,) = d["stack"]["create_objects"]
    assert created.startswith("config swarmapp_site_index.html_") and created[7:] not in old
    report = app.json("ship", "sandbox")
    assert only(report)["result"] == "deployed", report
    assert every_node(app) == {"v2"}
    assert app.task_ids("web").isdisjoint(web)  # every web task replaced
    # the worker mounts nothing that changed and its image's digest is the
    # same (the stack names images by digest, not by the project's tag)
    assert app.task_ids("worker") == worker
    new = app.sh(app.manager, "docker config ls --format '{{.Name}}'").split()
    assert len(new) == 2 and set(old) <= set(new)  # the kept v1 release still lists its own


def test_a_failing_migration_stops_the_ship_with_nothing_updated(app: App) -> None:
    current, web = app.current(), app.task_ids("web")
    app.set_vars("v3", migrate_exit=3)
    report = app.json("ship", "sandbox", check=1)
    h = only(report)
    assert h["result"] == "failed"
    assert "one-shot migrate failed" in h["error"] and "nothing was updated" in h["error"]
    assert app.current() == current and app.task_ids("web") == web
    assert every_node(app) == {"v2"}
    assert app.hooks()[-1] == f"on_failure {report['release']}"


def test_an_unhealthy_release_is_rolled_back_by_swarm(app: App) -> None:
    current = app.current()
    app.set_vars("v4", health=UNHEALTHY)
    p = app.run("-o", "json", "ship", "sandbox", check=1)
    h = only(json.loads(p.stdout))
    assert h["result"] == "rolled back", h
    assert h["release"] == current and h["rolled_back_from"]
    assert h["error"].startswith("web: swarm rolled the update back"), h["error"]
    assert app.current() == current
    assert every_node(app) == {"v2"}


def test_rollback_redeploys_the_previous_release(app: App) -> None:
    app.set_vars("v2")  # what the inventory says does not matter to a rollback
    report = app.json("rollback", "sandbox")
    h = only(report)
    assert h["result"] == "rolled back", report
    assert every_node(app) == {"v1"}
    assert app.current() == h["release"] != h["rolled_back_from"]


def test_status_shows_services_tasks_per_node_and_update_state(app: App) -> None:
    rows = app.json("status", "sandbox")["sandbox-1"]
    web = {r["service"]: r for r in rows if r["service"].startswith("web @ ")}
    assert set(web) == {"web @ sandbox-1", "web @ sandbox-2", "web @ sandbox-3"}
    for r in web.values():
        assert r["status"] == "running"
        assert r["health"].startswith("3/3 running, update ")
        assert "/swarmapp/py" in r["image"]
    (worker,) = [r for r in rows if r["service"].startswith("worker @ ")]
    assert worker["health"].startswith("1/1 running")


def test_logs_come_from_docker_service_logs(app: App) -> None:
    p = app.run("logs", "sandbox", "web", "--tail", "5")
    # http.server logs the gate's and the test's requests, each line naming its task and node
    lines = [ln for ln in p.stdout.splitlines() if "GET / HTTP" in ln]
    assert lines, p.stdout + p.stderr
    assert any("swarmapp_web." in ln and "@sandbox-" in ln for ln in lines)


def test_exec_runs_on_the_node_where_the_task_runs(app: App) -> None:
    # web runs on every node: the first in inventory order
    p = app.run("exec", "sandbox", "web", "--", "cat", "/srv/index.html")
    assert p.stdout.splitlines() == ["sandbox-1 | v1"], p.stdout + p.stderr
    # the one worker task runs on one node: exec finds it there
    node = app.sh(app.manager, "docker service ps --filter desired-state=running "
                  "--format '{{.Node}}' swarmapp_worker").strip()
    host = next(h for h in app.info.hosts if h.name == node)
    cid = app.sh(host, "docker ps -q --filter label=com.docker.swarm.service.name="
                 "swarmapp_worker").strip()
    p = app.run("exec", "sandbox", "worker", "--", "cat", "/etc/hostname")
    assert p.stdout.splitlines() == [f"{node} | {cid}"], p.stdout + p.stderr
    other = next(h.name for h in app.info.hosts if h.name != node)
    p = app.run("exec", "sandbox", "worker", "--limit", other, "--", "true", check=1)
    assert f"no task of worker runs on {other} (its tasks run on {node})" in p.stderr
