"""Day-2 features end to end on one sandbox of 2 hosts (Docker preinstalled)
with ``tests/e2e/apps/rollapp``: hooks (order, environment, a failing
``pre_deploy`` and a failing ``post_up``), the audit log (every action of
the file's runs, merged from both hosts), the free-space check (a 4 MB
tmpfs as deploy_dir), image prune (8 ships, keep_releases: 3) and a
rollback to the oldest kept release with the registry stopped.

The tests run in order and build on each other: the first ship makes the
release the failing ones must leave in place.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import copy_tracked

from deployer.commands.diskspace import by_digest

pytestmark = pytest.mark.e2e

ROLLAPP = Path(__file__).parent / "apps" / "rollapp"
BASE_IMAGE = os.environ.get("DEPLOYER_SANDBOX_BASE_IMAGE", "debian:bookworm")
WEB_PORT = 8000
HOOK_SECRET = "hook-Secret-e2e-9317"
OTHER_SECRET = "other-Secret-e2e-5521"

# One script for every hook, local and remote: it prints its name, argv,
# folder and environment, and fails (exit 7) when the file `fail` (rendered
# per host into the release, or touched in the project) names it.
RECORD = r"""#!/bin/sh
echo "ran=$1 pwd=$(pwd) app=$DEPLOYER_APP env=$DEPLOYER_ENV release=$DEPLOYER_RELEASE" \
  "hosts=$DEPLOYER_HOSTS host=${DEPLOYER_HOST:-none} secret=$HOOK_SECRET" \
  "other=${OTHER_SECRET:-unset} arg2=$2"
if [ -f fail ] && [ "$(cat fail)" = "$1" ]; then echo "failing $1" >&2; exit 7; fi
exit 0
"""

HOOKS = """
hooks:
  pre_build: [./scripts/record, pre_build, "a b"]
  pre_deploy: [./scripts/record, pre_deploy, "$(touch pwned)"]
  post_deploy: [./scripts/record, post_deploy]
  on_failure: [./scripts/record, on_failure]
  pre_up: [./scripts/record, pre_up]
  post_up: [./scripts/record, post_up]
  env: [HOOK_SECRET]
"""

HOOK_LINE = re.compile(r"^(?:\[\s*[\d.]+s\] )?(\S+): hook (\w+) \| ran=(\w+) (.*)$")


class Day2:
    """A copy of rollapp with hooks next to its own sandbox, driven through the CLI."""

    def __init__(self, root: Path, info: Any) -> None:
        self.root = root
        self.info = info
        self.env = {**os.environ, "NO_COLOR": "1", "HOOK_SECRET": HOOK_SECRET,
                    "OTHER_SECRET": OTHER_SECRET}
        self.env.pop("GITHUB_ACTIONS", None)
        inv = root / "inventories" / "sandbox.yaml"
        self.base = inv.read_text().split("\ngroups:\n")[0] + "\n"
        self.inventory = inv
        self.outputs: list[str] = []

    @property
    def names(self) -> list[str]:
        return [h.name for h in self.info.hosts]

    def address(self, name: str) -> str:
        return str(self.info.host(name).address)

    def write_inventory(self, greeting: str, host_vars: dict[str, dict[str, Any]] | None = None
                        ) -> None:
        host_vars = host_vars or {}
        doc = {"vars": {"greeting": greeting, "web_port": WEB_PORT},
               "groups": {"app": {"hosts": {
                   n: {"address": self.address(n),
                       **({"vars": host_vars[n]} if n in host_vars else {})}
                   for n in self.names}}}}
        self.inventory.write_text(self.base + yaml.safe_dump(doc, sort_keys=False))

    def run(self, *args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([sys.executable, "-m", "deployer", "-C", str(self.root), *args],
                           capture_output=True, text=True, env=self.env, timeout=900)
        self.outputs.append(p.stdout + p.stderr)
        if check is not None:
            assert p.returncode == check, f"exit {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p

    def ship(self, check: int = 0) -> tuple[dict[str, Any], str]:
        p = self.run("-o", "json", "ship", "sandbox", check=check)
        return json.loads(p.stdout), p.stderr

    def ship_limit(self, host: str, *args: str, check: int = 0) -> tuple[dict[str, Any], str]:
        p = self.run("-o", "json", "ship", "sandbox", "--limit", host, *args, check=check)
        return json.loads(p.stdout), p.stderr

    def sh(self, name: str, script: str) -> str:
        return subprocess.run(
            ["docker", "exec", self.info.host(name).container, "sh", "-c", script],
            capture_output=True, text=True, check=True).stdout

    def current(self, name: str) -> str:
        return self.sh(name, "basename $(readlink /opt/rollapp/current)").strip()

    def releases(self, name: str) -> list[str]:
        return self.sh(name, "ls /opt/rollapp/releases").split()


def get(address: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{address}:{WEB_PORT}/", timeout=10) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def results(report: dict[str, Any]) -> dict[str, str]:
    return {h["host"]: h["result"] for h in report["hosts"]}


def hook_runs(stderr: str) -> list[tuple[str, str, dict[str, str]]]:
    """(where, hook, recorded environment) of each hook run, in output order."""
    out = []
    for line in stderr.splitlines():
        m = HOOK_LINE.match(line)
        if m:
            where, name, ran, rest = m.groups()
            assert name == ran
            fields = dict(kv.split("=", 1) for kv in re.findall(r"\w+=\S*", rest))
            out.append((where, name, fields))
    return out


@pytest.fixture(scope="module")
def day2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Day2]:
    from deployer.sandbox import manager

    root = copy_tracked(ROLLAPP, tmp_path_factory.mktemp("day2"))
    script = root / "scripts" / "record"
    script.parent.mkdir()
    script.write_text(RECORD)
    script.chmod(0o755)
    (root / "templates" / "fail.j2").write_text("{{ fail_hook | default('none') }}\n")
    # Patient health checks: this file's point is not the health gate, and a
    # loaded CI machine answers a 3 s healthcheck late.
    compose = root / "templates" / "docker-compose.yaml.j2"
    compose.write_text(compose.read_text().replace("timeout: 3s", "timeout: 20s")
                       .replace("retries: 3", "retries: 10"))
    cfg = root / "deployer.yaml"
    cfg.write_text(cfg.read_text().replace("keep_releases: 5", "keep_releases: 3")
                   .replace("health_timeout: 60", "health_timeout: 300").replace(
        "files:\n",
        "files:\n  - {copy: scripts/record}\n  - {template: templates/fail.j2, dest: fail}\n")
        + HOOKS)
    git = ["git", "-C", str(root), "-c", "user.name=e2e", "-c", "user.email=e2e@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "rollapp with hooks"], check=True)
    try:
        info = manager.up(root, hosts=2, base_image=BASE_IMAGE, with_docker=True)
        d = Day2(root, info)
        d.write_inventory("one")
        yield d
    finally:
        manager.down(root)


def test_plan_lists_the_hooks(day2: Day2) -> None:
    out = day2.run("plan", "sandbox").stdout
    for name in ("pre_build", "pre_deploy", "pre_up", "post_up", "post_deploy", "on_failure"):
        assert f"hook {name} (" in out, out
    assert "hook pre_up (each host): ./scripts/record pre_up" in out
    assert "hook pre_build (local): ./scripts/record pre_build 'a b'" in out


def test_every_hook_runs_in_order_with_its_environment(day2: Day2) -> None:
    report, err = day2.ship()
    a, b = day2.names
    assert results(report) == {a: "deployed", b: "deployed"}, err
    runs = hook_runs(err)
    order = [(w, n) for w, n, _ in runs]
    assert order[:2] == [("local", "pre_build"), ("local", "pre_deploy")], err
    assert order[-1] == ("local", "post_deploy"), err
    for h in (a, b):
        assert order.index((h, "pre_up")) < order.index((h, "post_up")), err
    assert sorted(order[2:-1]) == sorted([(a, "pre_up"), (a, "post_up"),
                                          (b, "pre_up"), (b, "post_up")]), err
    assert ("local", "on_failure") not in order
    release = report["release"]
    for where, name, env in runs:
        assert env["app"] == "rollapp" and env["env"] == "sandbox"
        assert env["release"] == release
        assert env["hosts"] == f"{a},{b}"
        assert env["secret"] == "******"  # named in hooks.env: there, and masked
        assert env["other"] == "unset"  # not named: not passed
        if where == "local":
            assert env["host"] == "none" and env["pwd"] == str(day2.root)
        else:
            assert env["host"] == where
            assert env["pwd"] == f"/opt/rollapp/releases/{release}"
    assert dict((n, e["arg2"]) for w, n, e in runs if w == "local")["pre_build"] == "a"
    assert not (day2.root / "pwned").exists()  # "$(touch pwned)" was an argument
    for h in (a, b):
        assert get(day2.address(h))["greeting"] == "one"


def test_failing_pre_deploy_changes_no_host(day2: Day2) -> None:
    before = {h: (day2.current(h), day2.releases(h)) for h in day2.names}
    day2.write_inventory("two")
    (day2.root / "fail").write_text("pre_deploy\n")
    try:
        p = day2.run("ship", "sandbox", check=1)
    finally:
        (day2.root / "fail").unlink()
    assert "hook pre_deploy `./scripts/record pre_deploy '$(touch pwned)'` failed (exit 7)" \
        in p.stderr, p.stderr
    ran = [n for _, n, _ in hook_runs(p.stderr)]
    assert ran == ["pre_build", "pre_deploy", "on_failure"], p.stderr
    assert "Traceback" not in p.stderr
    for h in day2.names:
        assert (day2.current(h), day2.releases(h)) == before[h]
        assert get(day2.address(h))["greeting"] == "one"


def test_failing_post_up_rolls_that_host_back(day2: Day2) -> None:
    a, b = day2.names
    old = day2.current(b)
    day2.write_inventory("three", host_vars={b: {"fail_hook": "post_up"}})
    report, err = day2.ship(check=1)
    assert results(report) == {a: "deployed", b: "rolled back"}, err
    bad = next(h for h in report["hosts"] if h["host"] == b)
    assert "hook post_up `./scripts/record post_up` failed (exit 7)" in bad["error"]
    assert bad["release"] == old == day2.current(b)
    assert get(day2.address(b))["greeting"] == "one"
    assert get(day2.address(a))["greeting"] == "three"
    assert f"{b}: hook post_up | failing post_up" in err
    ran = [(w, n) for w, n, _ in hook_runs(err)]
    assert ran[-1] == ("local", "on_failure") and ("local", "post_deploy") not in ran, err


def test_audit_log_holds_every_action_and_merges_both_hosts(day2: Day2) -> None:
    a, b = day2.names
    day2.run("rollback", "sandbox", "--limit", a)
    day2.run("lock", "sandbox", "-m", "audit e2e")
    day2.run("unlock", "sandbox")
    day2.run("exec", "sandbox", "web", "--limit", b, "--", "true")
    entries = json.loads(day2.run("-o", "json", "audit", "sandbox").stdout)
    seen = [(e["host"], e["action"], e["result"]) for e in entries]
    # Newest first, both hosts' logs in one list. The pre_deploy failure
    # never reached a host, so it is in no host's log.
    assert seen[:1] == [(b, "exec", "ok")]
    assert sorted(seen[1:3]) == sorted([(a, "unlock", "ok"), (b, "unlock", "ok")])
    assert sorted(seen[3:5]) == sorted([(a, "lock", "ok"), (b, "lock", "ok")])
    assert seen[5:6] == [(a, "rollback", "rolled back")]
    assert sorted(seen[6:8]) == sorted([(a, "ship", "deployed"), (b, "ship", "rolled back")])
    assert sorted(seen[8:]) == sorted([(a, "ship", "deployed"), (b, "ship", "deployed")])
    times = [e["time"] for e in entries]
    assert times == sorted(times, reverse=True)
    commit = subprocess.run(["git", "-C", str(day2.root), "rev-parse", "HEAD"],
                            capture_output=True, text=True, check=True).stdout.strip()
    for e in entries:
        assert e["commit"] == commit and e["app"] == "rollapp" and e["env"] == "sandbox"
        assert "@" in e["user"] and e["duration"] >= 0
    lock = next(e for e in entries if e["action"] == "lock")
    assert lock["detail"] == "audit e2e"
    assert next(e for e in entries if e["action"] == "exec")["detail"] == "exec in web: true"
    post_up = next(e for e in entries if e["result"] == "rolled back" and e["action"] == "ship")
    assert "hook post_up" in post_up["detail"]
    # On each host: its own actions only, one JSON object per line.
    for h in (a, b):
        raw = day2.sh(h, "cat /opt/rollapp/audit.log").splitlines()
        assert {json.loads(x)["host"] for x in raw} == {h}
        assert len(raw) == sum(1 for e in entries if e["host"] == h)
    text = day2.run("audit", "sandbox", "--lines", "3", "--since", "1h").stdout
    lines = text.splitlines()
    assert lines[0] == "audit rollapp / sandbox: 3 entries, newest first", text
    assert lines[1].split()[1:3] == [b, "exec"]
    assert "ship" not in text and "unlock" in text
    none = json.loads(day2.run("-o", "json", "audit", "sandbox", "--since", "2999-01-01").stdout)
    assert none == []


def test_a_small_tmpfs_deploy_dir_fails_with_the_disk_message(day2: Day2) -> None:
    _, b = day2.names
    before = (day2.current(b), day2.releases(b))
    # The host's deployment, moved onto a 4 MB tmpfs: far below min_free (2GB).
    day2.sh(b, "set -e; cp -a /opt/rollapp /tmp/rollapp.copy; "
               "mount -t tmpfs -o size=4m,mode=0755 day2-small /opt/rollapp; "
               "cp -a /tmp/rollapp.copy/. /opt/rollapp/")
    try:
        day2.write_inventory("disk")
        report, err = day2.ship_limit(b, check=1)
        assert results(report) == {b: "failed"}, err
        error = report["hosts"][0]["error"]
        assert re.search(r"check free space: not enough disk space on /opt/rollapp "
                         r"\(filesystem /opt/rollapp\): needs 2\.0 GB \(release files "
                         r"[\d.]+ k?B \+ min_free 2\.0 GB\), [\d.]+ MB free", error), error
        steps = [st["step"] for st in report["hosts"][0]["steps"]]
        assert "upload release" not in steps and "pull images" not in steps
        assert (day2.current(b), day2.releases(b)) == before
        assert day2.sh(b, "ls -A /opt/rollapp/releases | grep -c partial || true").strip() == "0"
        assert get(day2.address(b))["greeting"] == "one"
    finally:
        day2.sh(b, "umount /opt/rollapp; rm -rf /tmp/rollapp.copy")


def test_eight_ships_leave_exactly_the_kept_releases_images(day2: Day2) -> None:
    a, _ = day2.names
    server = day2.root / "server.py"
    source = server.read_text()
    for i in range(8):  # a new image each time: server.py is its only layer
        server.write_text(source + f"# build {i}\n")
        day2.write_inventory(f"p{i}")
        report, err = day2.ship_limit(a, "--tag", f"p{i}")
        assert results(report) == {a: "deployed"}, err
    kept = day2.releases(a)
    assert len(kept) == 3
    wanted = set()
    for r in kept:
        manifest = json.loads(day2.sh(a, f"cat /opt/rollapp/releases/{r}/manifest.json"))
        wanted.add(by_digest(manifest["images"]["web"]))  # repo@sha256:..., as pulled
    repo = next(iter(wanted)).split("@")[0]
    listed = day2.sh(a, "docker images --no-trunc --digests "
                        "--format '{{.Repository}}@{{.Digest}}'").split()
    assert {x for x in listed if x.startswith(repo + "@")} == wanted
    # What ship did, `prune` does on demand: here there is nothing left to remove.
    out = day2.run("prune", "sandbox", "--limit", a).stderr
    assert "removed 0 images and 0 stopped containers; kept 3 images" in out, out


def test_rollback_to_the_oldest_kept_release_without_the_registry(day2: Day2) -> None:
    a, _ = day2.names
    oldest = day2.releases(a)[0]
    registry = day2.info.registry.container
    subprocess.run(["docker", "stop", registry], check=True, capture_output=True)
    try:
        report = json.loads(day2.run("-o", "json", "rollback", "sandbox", "--limit", a,
                                     "--to", oldest).stdout)
    finally:
        subprocess.run(["docker", "start", registry], check=True, capture_output=True)
    assert results(report) == {a: "rolled back"}
    assert day2.current(a) == oldest
    assert get(day2.address(a))["greeting"] == "p5"


def test_no_secret_in_any_output(day2: Day2) -> None:
    for text in day2.outputs:
        assert HOOK_SECRET not in text and OTHER_SECRET not in text
