"""``deployer plan ENV --diff`` end to end on the sandbox (issue 13).

A small app (rollapp's image; a ``web`` service that mounts a rendered
config and reads a 0600 env file, and a ``side`` service that mounts
nothing of the release) is shipped once to two hosts with Docker
preinstalled. Then, each time through the CLI:

- before the first ship: a first release, every file new;
- after it: every host ``unchanged``, after one connection and one command;
- one var changed: only that file's changed lines, and only ``web`` recreated
  (text and ``-o json`` say the same, and a ship then recreates exactly it);
- a secret rotated: the compose line that holds it changes, masked, and the
  0600 file is only ``changed``; neither value nor the file's hash is printed;
- a file edited and a container stopped on the host by hand: drift.

Around every ``plan --diff`` the deploy directory tree (names, modes, sizes,
mtimes, sha256 of every file) and the containers (id, image, state, start
time, restarts) are read on each host, and must be byte-identical after it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.helpers import deployer_env, run_deployer

pytestmark = pytest.mark.e2e

ROLLAPP = Path(__file__).parent / "apps" / "rollapp"
BASE_IMAGE = os.environ.get("DEPLOYER_SANDBOX_BASE_IMAGE", "debian:bookworm")
APP = "diffapp"
DIR = f"/opt/{APP}"
TAG = "diff-v1"
TOKEN = "tok-Secret-diff-9931"
TOKEN2 = "tok-Rotated-diff-5517"
OUTPUTS: list[str] = []

DEPLOYER_YAML = f"""\
app: {APP}
images:
  web: {{repository: {APP}/web, context: .}}
files:
  - {{template: templates/docker-compose.yaml.j2, dest: docker-compose.yaml}}
  - {{template: templates/config.json.j2, dest: config.json}}
  - {{template: templates/app.env.j2, dest: app.env, mode: "0600"}}
compose_file: docker-compose.yaml
health_timeout: 60
"""

COMPOSE = """\
services:
  web:
    image: {{ images.web | tojson }}
    restart: unless-stopped
    ports:
      - "{{ web_port }}:8000"
    env_file: [./app.env]
    environment:
      TOKEN_COPY: {{ api_token | tojson }}
    volumes:
      - ./config.json:/app/config.json:ro
    healthcheck:
      test: ["CMD", "bash", "-c", "@PROBE@"]
      interval: 1s
      timeout: 10s
      retries: 3
      start_period: 2s
  side:
    image: {{ images.web | tojson }}
    restart: unless-stopped
    command: ["python3", "-m", "http.server", "8001"]
""".replace("@PROBE@", "exec 3<>/dev/tcp/127.0.0.1/8000 && printf 'GET /healthz HTTP/1.0"
            "\\\\r\\\\n\\\\r\\\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '")

CONFIG = """\
{
  "greeting": {{ greeting | tojson }},
  "healthy": true,
  "host": {{ host.name | tojson }}
}
"""


class App:
    def __init__(self, root: Path, info: Any) -> None:
        self.root = root
        self.info = info
        self.env = deployer_env({"API_TOKEN": TOKEN})
        self.inventory = root / "inventories" / "sandbox.yaml"
        self.base = self.inventory.read_text()

    @property
    def hosts(self) -> list[Any]:
        return self.info.hosts  # type: ignore[no-any-return]

    def set_vars(self, greeting: str) -> None:
        self.inventory.write_text(
            self.base + "\nvars:\n  web_port: 8000\n  api_token: ${API_TOKEN}\n"
            f"  greeting: {json.dumps(greeting)}\n")

    def run(self, *args: str, check: int | None = 0,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        p = run_deployer(self.root, *args, env={**self.env, **(env or {})}, check=None)
        OUTPUTS.append(p.stdout + p.stderr)
        if check is not None:
            assert p.returncode == check, f"exit {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p

    def sh(self, host: Any, script: str) -> str:
        return subprocess.run(["docker", "exec", host.container, "sh", "-c", script],
                              capture_output=True, text=True, check=True).stdout

    def snapshot(self) -> dict[str, str]:
        """Per host: the deploy tree and the project's containers, as bytes."""
        tree = (f"cd {DIR} 2>/dev/null && find . -printf '%p %m %s %T@ %y %l\\n' | LC_ALL=C sort"
                f" && find . -type f -exec sha256sum {{}} + | LC_ALL=C sort; true")
        ps = ("ids=$(docker ps -aq --no-trunc --filter label=com.docker.compose.project="
              f"{APP}); [ -z \"$ids\" ] || docker inspect --format "
              "'{{.Id}} {{.Name}} {{.Config.Image}} {{.State.Status}} {{.State.StartedAt}} "
              "{{.RestartCount}}' $ids | LC_ALL=C sort; docker ps -a --no-trunc --format "
              "'{{.ID}} {{.Image}} {{.Names}} {{.State}} {{.CreatedAt}}' | LC_ALL=C sort")
        return {h.name: self.sh(h, tree) + "\n--- containers\n" + self.sh(h, ps)
                for h in self.hosts}

    def containers(self, host: Any) -> dict[str, str]:
        """service -> container id of the project on ``host``."""
        out = self.sh(host, "docker ps -a --no-trunc --filter label=com.docker.compose.project="
                      f"{APP} --format '{{{{.Label \"com.docker.compose.service\"}}}} {{{{.ID}}}}'")
        return dict(line.split() for line in out.splitlines() if line.strip())

    def plan_diff(self, *args: str, env: dict[str, str] | None = None,
                  ) -> tuple[dict[str, Any], str]:
        """``plan --diff`` as JSON and as text; the hosts unchanged by both."""
        before = self.snapshot()
        j = self.run("-o", "json", "plan", "sandbox", "--diff", "--tag", TAG, *args, env=env)
        t = self.run("plan", "sandbox", "--diff", "--tag", TAG, *args, env=env)
        after = self.snapshot()
        for name in before:
            assert after[name] == before[name], f"{name} changed by plan --diff"
        return json.loads(j.stdout), t.stdout


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    from deployer.sandbox import manager

    root = tmp_path_factory.mktemp("diffapp")
    shutil.copy(ROLLAPP / "Dockerfile", root / "Dockerfile")
    shutil.copy(ROLLAPP / "server.py", root / "server.py")
    (root / "templates").mkdir()
    (root / "templates" / "docker-compose.yaml.j2").write_text(COMPOSE)
    (root / "templates" / "config.json.j2").write_text(CONFIG)
    (root / "templates" / "app.env.j2").write_text("TOKEN={{ api_token }}\n")
    (root / "deployer.yaml").write_text(DEPLOYER_YAML)
    try:
        info = manager.up(root, hosts=2, base_image=BASE_IMAGE, with_docker=True)
        a = App(root, info)
        a.set_vars("one")
        yield a
    finally:
        manager.down(root)


def by_host(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {h["name"]: h for h in report["hosts"]}


def statuses(h: dict[str, Any]) -> dict[str, str]:
    return {f["dest"]: f["status"] for f in h["files"]}


def section(text: str, host: str) -> str:
    """One host's part of the text output."""
    part = text.split(f"== {host} ", 1)[1]
    return part.split("\n== ", 1)[0]


def test_first_release_shows_every_file_new(app: App) -> None:
    report, text = app.plan_diff()
    for h in app.hosts:
        d = by_host(report)[h.name]
        assert d["first_release"] and not d["unchanged"] and d["current"] is None
        assert statuses(d) == dict.fromkeys(["app.env", "config.json", "docker-compose.yaml"],
                                            "added")
        assert d["services"]["start"] == ["side", "web"]
        assert d["drift"] == {"files": [], "containers": []}
        assert "first release: every file is new" in section(text, h.name)
    assert "web" in report["unpinned_images"]  # nothing pushed yet


def test_after_ship_every_host_is_unchanged(app: App) -> None:
    ship = json.loads(app.run("-o", "json", "ship", "sandbox", "--tag", TAG).stdout)
    assert {h["result"] for h in ship["hosts"]} == {"deployed"}
    report, text = app.plan_diff()
    assert report["unpinned_images"] == []
    assert report["images"]["web"] == ship["images"]["web"]  # pinned like the ship
    for h in app.hosts:
        d = by_host(report)[h.name]
        assert d["unchanged"] is True, d
        assert set(statuses(d).values()) == {"unchanged"}
        assert d["images"] == [] and d["drift"] == {"files": [], "containers": []}
        assert d["services"]["recreate"] == d["services"]["start"] == []
        assert section(text, h.name).splitlines()[1].strip() == "unchanged"
    # One connection and one command per host (the debug log lists each).
    err = app.run("-v", "plan", "sandbox", "--diff", "--tag", TAG).stderr
    for h in app.hosts:
        assert err.count(f" {h.name}: $ ") == 1, err
        assert err.count(f" {h.name}: opened SSH connection #") == 1, err


def test_one_var_changed_shows_only_its_lines_and_the_service_to_recreate(app: App) -> None:
    app.set_vars("two")
    try:
        report, text = app.plan_diff()
        # The prediction is checked against what compose then does.
        before = {h.name: app.containers(h) for h in app.hosts}
        app.run("ship", "sandbox", "--tag", TAG)
        after = {h.name: app.containers(h) for h in app.hosts}
    finally:
        app.set_vars("one")
    app.run("ship", "sandbox", "--tag", TAG)  # back to the release the next tests expect
    for h in app.hosts:
        assert after[h.name]["web"] != before[h.name]["web"]  # recreated
        assert after[h.name]["side"] == before[h.name]["side"]  # left alone
    for h in app.hosts:
        d = by_host(report)[h.name]
        assert not d["unchanged"] and not d["same_fingerprint"]
        assert statuses(d) == {"app.env": "unchanged", "config.json": "changed",
                               "docker-compose.yaml": "unchanged"}
        cfg = next(f for f in d["files"] if f["dest"] == "config.json")
        changed = [ln for ln in cfg["diff"].splitlines()
                   if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
        assert changed == ['-  "greeting": "one",', '+  "greeting": "two",']
        assert d["services"]["recreate"] == ["web"]  # side mounts nothing of the release
        assert d["services"]["start"] == d["services"]["remove"] == []
        assert d["images"] == []
        assert d["drift"] == {"files": [], "containers": []}
        # The text says the same.
        part = section(text, h.name)
        assert "changed   config.json" in part
        assert "\n".join(changed) in part
        assert "recreate web:" in part and "side" not in part.split("services", 1)[1]
        assert "prediction from the compose file" in part
        assert "app.env" not in part and "docker-compose.yaml" not in part


def test_rotated_secret_is_never_printed(app: App) -> None:
    report, text = app.plan_diff(env={"API_TOKEN": TOKEN2})
    for h in app.hosts:
        d = by_host(report)[h.name]
        st = statuses(d)
        assert st["app.env"] == "changed" and st["docker-compose.yaml"] == "changed"
        env_file = next(f for f in d["files"] if f["dest"] == "app.env")
        assert env_file["secret"] and "diff" not in env_file
        compose = next(f for f in d["files"] if f["dest"] == "docker-compose.yaml")
        lines = [ln for ln in compose["diff"].splitlines()
                 if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
        assert lines == ['-      TOKEN_COPY: "******(old)"', '+      TOKEN_COPY: "******"']
        assert d["services"]["recreate"] == ["web"]
    hashes = [hashlib.sha256(f"TOKEN={t}\n".encode()).hexdigest() for t in (TOKEN, TOKEN2)]
    for out in (json.dumps(report), text):
        for secret in (TOKEN, TOKEN2, *hashes, *(x[:12] for x in hashes)):
            assert secret not in out


def test_hand_edits_on_the_host_are_drift(app: App) -> None:
    h0, h1 = app.hosts
    app.sh(h0, f"sed -i 's/\"healthy\": true/\"healthy\": false/' {DIR}/current/config.json")
    app.sh(h0, f"docker stop $(docker ps -q --filter label=com.docker.compose.project={APP} "
               "--filter label=com.docker.compose.service=side)")
    report, text = app.plan_diff()
    d = by_host(report)[h0.name]
    assert d["same_fingerprint"] and not d["unchanged"]
    assert set(statuses(d).values()) == {"unchanged"}  # ship would change nothing
    assert [f["dest"] for f in d["drift"]["files"]] == ["config.json"]
    edit = d["drift"]["files"][0]["diff"]
    assert '-  "healthy": true,' in edit and '+  "healthy": false,' in edit
    assert [c["service"] for c in d["drift"]["containers"]] == ["side"]
    assert "exited" in d["drift"]["containers"][0]["problem"]
    part = section(text, h0.name)
    assert "drift" in part and "container side:" in part and "config.json" in part
    assert "ship changes nothing here" in part
    # The other host is untouched.
    assert by_host(report)[h1.name]["unchanged"] is True


def test_no_secret_in_any_output(app: App) -> None:
    reg_pw = app.info.registry.password
    assert OUTPUTS
    for text in OUTPUTS:
        assert TOKEN not in text and TOKEN2 not in text and reg_pw not in text
