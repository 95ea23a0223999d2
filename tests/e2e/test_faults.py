"""Fault injection on the sandbox (issue 15, scenarios 1-7 and 13-16; the
concurrent ship and the signals, 8-12, are tests/e2e/test_faults_signals.py).

One sandbox of 2 hosts with Docker preinstalled and ``tests/e2e/apps/faultapp``
(``web`` and ``side`` answer with the release they were started from, every
container carries its release as a label, ``migrate`` is a one-shot). The
tests run in order; each scenario:

1. changes the app, so there is a new release to break;
2. runs ``ship`` and injects its fault on cue (when a host enters the step
   the scenario is about, read from the progress lines), never after a sleep;
3. checks the exit code, that the message names the host and the step, and
   on every host: each container and each HTTP answer is of the one release
   ``current`` points at (old or new, never a mix), no ``.lock`` and no
   ``.docker-config-*`` is left, no release directory is incomplete;
4. repairs the fault, and a plain ``ship`` succeeds (and checks the same).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import copy_tracked

from e2e import faults
from e2e.helpers import deployer_argv, deployer_env

pytestmark = pytest.mark.e2e

APP = Path(__file__).parent / "apps" / "faultapp"
BASE_IMAGE = os.environ.get("DEPLOYER_SANDBOX_BASE_IMAGE", "debian:bookworm")
DEPLOY_DIR = "/opt/faultapp"
PORTS = {"web": 8000, "side": 8001}
SERVICES = {"migrate", "web", "side"}
RESULTS = ("deployed", "unchanged", "failed", "rolled back", "skipped")
OUTPUTS: list[str] = []


class Suite:
    """The project, its sandbox, and a counter that makes every ship new."""

    def __init__(self, root: Path, info: Any) -> None:
        self.root = root
        self.info = info
        self.env = deployer_env()
        self.inventory = root / "inventories" / "sandbox.yaml"
        self.base = self.inventory.read_text()
        self.n = 0
        self.extra: dict[str, Any] = {}

    @property
    def names(self) -> list[str]:
        return [h.name for h in self.info.hosts]

    def container(self, name: str) -> str:
        return str(self.info.host(name).container)

    def address(self, name: str) -> str:
        return str(self.info.host(name).address)

    def change(self, **extra: Any) -> str:
        """A new greeting (so the next ship has something to deploy) plus
        ``extra`` vars; returns the greeting."""
        self.n += 1
        self.extra = extra
        greeting = f"hello-{self.n}"
        lines = [f"  {k}: {json.dumps(v)}" for k, v in
                 {"greeting": greeting, **extra}.items()]
        self.inventory.write_text(self.base + "vars:\n" + "\n".join(lines) + "\n")
        return greeting

    def argv(self, *args: str) -> list[str]:
        return deployer_argv(self.root, "-o", "json", *args)

    def ship(self, *args: str, env: dict[str, str] | None = None
             ) -> tuple[int, dict[str, Any] | None, str]:
        """``-o json ship sandbox``: (exit code, report or None, stderr)."""
        p = subprocess.run(self.argv("ship", "sandbox", *args), capture_output=True, text=True,
                           env={**self.env, **(env or {})}, timeout=900)
        return self._done(p.returncode, p.stdout, p.stderr)

    def watch(self) -> faults.WatchedRun:
        return faults.WatchedRun(self.argv("ship", "sandbox"), self.env)

    def finish(self, run: faults.WatchedRun) -> tuple[int, dict[str, Any] | None, str]:
        return self._done(*run.finish())

    def _done(self, code: int, out: str, err: str) -> tuple[int, dict[str, Any] | None, str]:
        OUTPUTS.append(out + err)
        # deployer's own crash starts a line; a healthcheck's output quoted
        # in a result line does not count.
        assert not re.search(r"^Traceback", err, re.M) and "internal error" not in err, err
        report = json.loads(out) if out.strip() else None
        return code, report, err


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    from deployer.sandbox import manager

    root = copy_tracked(APP, tmp_path_factory.mktemp("faultapp"))
    try:
        info = manager.up(root, hosts=2, base_image=BASE_IMAGE, with_docker=True)
        yield Suite(root, info)
    finally:
        manager.down(root)


# -- checks --------------------------------------------------------------------


def results(report: dict[str, Any] | None) -> dict[str, str]:
    assert report is not None, "no JSON report"
    return {h["host"]: h["result"] for h in report["hosts"]}


def outcome(err: str, host: str) -> str:
    """The progress line with ``host``'s result: ``sandbox-1: failed (...) in 2.1s``."""
    pattern = re.compile(rf"^\[\s*[\d.]+s\] ({re.escape(host)}: ({'|'.join(RESULTS)})\b.*)$")
    found = [m.group(1) for line in err.splitlines() if (m := pattern.match(line))]
    assert found, f"no result line for {host}:\n{err}"
    print(found[-1])  # shown with -s or on failure: what a user reads
    return found[-1]


def served(s: Suite, name: str, service: str) -> dict[str, Any]:
    url = f"http://{s.address(name)}:{PORTS[service]}/"
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def consistent(s: Suite) -> dict[str, str]:
    """Every host runs exactly one release, the one ``current`` names, and a
    run left nothing behind. Returns host -> current release."""
    currents = {}
    for name in s.names:
        st = faults.host_state(s.container(name), "faultapp", DEPLOY_DIR)
        assert st.current, f"{name}: no current release"
        assert set(st.containers) == SERVICES, f"{name}: containers {st.containers}"
        for service, (release, state) in st.containers.items():
            assert release == st.current, (
                f"{name}: {service} runs {release} but current is {st.current}: {st.containers}")
            want = "exited" if service == "migrate" else "running"
            assert state == want, f"{name}: {service} is {state}: {st.containers}"
        for service in PORTS:
            body = served(s, name, service)
            assert body["release"] == st.current, f"{name}: {service} serves {body}"
            assert body["host"] == name
        assert st.leftovers == [], f"{name}: left behind {st.leftovers}"
        assert st.incomplete == [], f"{name}: incomplete releases {st.incomplete}"
        currents[name] = st.current
    return currents


def greetings(s: Suite) -> dict[str, str]:
    return {n: served(s, n, "web")["greeting"] for n in s.names}


def recovers(s: Suite) -> dict[str, str]:
    """The next plain ship succeeds and leaves every host on its release."""
    code, report, err = s.ship()
    assert code == 0, err
    assert set(results(report).values()) <= {"deployed", "unchanged"}, err
    now = consistent(s)
    assert report is not None
    for h in report["hosts"]:
        assert now[h["host"]] == h["release"], (h, now)
    want = f"hello-{s.n}"
    assert set(greetings(s).values()) == {want}
    return now


def releases_on(s: Suite, name: str) -> list[str]:
    return faults.sh(s.container(name), f"ls {DEPLOY_DIR}/releases").split()


@contextlib.contextmanager
def big_file(s: Suite, megabytes: int) -> Iterator[None]:
    """A ``copy:`` file of random bytes in the release, so its upload takes
    long enough to be cut, or fills a small disk. Removed afterwards (the next
    ship's change then includes its removal)."""
    blob = s.root / "blob.bin"
    cfg = s.root / "deployer.yaml"
    original = cfg.read_text()
    blob.write_bytes(os.urandom(megabytes * 1024 * 1024))
    cfg.write_text(original.replace("compose_file:", "  - copy: blob.bin\ncompose_file:"))
    try:
        yield
    finally:
        cfg.write_text(original)
        blob.unlink()


# -- the scenarios, in order ---------------------------------------------------


def test_first_ship(suite: Suite) -> None:
    suite.change()
    code, report, err = suite.ship()
    assert code == 0, err
    assert set(results(report).values()) == {"deployed"}, err
    consistent(suite)


def test_01_host_unreachable_at_start(suite: Suite) -> None:
    s = suite
    down, up = s.names
    before = consistent(s)
    greeting = s.change()
    with faults.sshd_stopped(s.container(down)):
        code, report, err = s.ship()
        assert code == 1, err
        assert results(report) == {down: "failed", up: "deployed"}, err
        line = outcome(err, down)
        assert "unreachable" in line and "connect" in line, line
        now = consistent(s)
    assert now[down] == before[down] and now[up] != before[up]
    assert greetings(s)[up] == greeting
    recovers(s)


def test_02_ssh_cut_during_upload(suite: Suite) -> None:
    s = suite
    cut, other = s.names
    before = consistent(s)
    with big_file(s, 48):
        s.change()
        run = s.watch()
        run.wait_step("upload release", (cut,))
        faults.cut_ssh(s.container(cut), s.info.ssh_user)
        code, report, err = s.finish(run)
        assert code == 1, err
        assert results(report) == {cut: "failed", other: "deployed"}, err
        line = outcome(err, cut)
        assert "upload release" in line and "connection lost" in line, line
        now = consistent(s)
        assert now[cut] == before[cut] and now[other] != before[other]
        recovers(s)


def test_03_ssh_cut_during_compose_up(suite: Suite) -> None:
    s = suite
    cut, other = s.names
    before = consistent(s)
    s.change()
    run = s.watch()
    run.wait_step("compose up", (cut,))
    faults.cut_ssh(s.container(cut), s.info.ssh_user)
    code, report, err = s.finish(run)
    assert code == 1, err
    res = results(report)
    assert res[other] == "deployed", err
    assert res[cut] in ("rolled back", "failed"), err
    line = outcome(err, cut)
    assert "compose up" in line and "connection lost" in line, line
    now = consistent(s)
    assert now[cut] == before[cut]
    recovers(s)


def test_04_registry_down_during_pull(suite: Suite) -> None:
    s = suite
    before = consistent(s)
    stamp = s.root / "stamp.txt"
    stamp.write_text(f"image {s.n}\n")  # a new layer: the hosts must pull
    s.change()
    run = s.watch()
    first = run.wait_step("pull images")
    with faults.registry_down(s.info):
        code, report, err = s.finish(run)
        assert code == 1, err
        assert set(results(report).values()) == {"failed"}, err
        line = outcome(err, first)
        assert "pull images" in line, line
        assert consistent(s) == before
    recovers(s)


def test_05_wrong_registry_password(suite: Suite) -> None:
    s = suite
    before = consistent(s)
    s.change()
    code, _report, err = s.ship(env={"SANDBOX_REGISTRY_PASSWORD": "not-the-password"})
    assert code == 1, err
    assert f"registry {s.info.registry.server}: login refused for user" in err, err
    assert "wrong username or password" in err, err
    for name in s.names:  # refused before any host was touched
        assert f"{name}: " not in err, err
    assert consistent(s) == before
    recovers(s)


def test_06_failing_migration(suite: Suite) -> None:
    s = suite
    before = consistent(s)
    s.change(migrate_ok=False)
    code, report, err = s.ship()
    assert code == 1, err
    assert set(results(report).values()) == {"rolled back"}, err
    for name in s.names:
        line = outcome(err, name)
        assert "migrate" in line, line
    assert "migration 0042 failed" in err  # its last log lines are shown
    assert consistent(s) == before
    s.change()
    recovers(s)


def test_07_failing_healthcheck(suite: Suite) -> None:
    s = suite
    before = consistent(s)
    s.change(healthy=False)
    code, report, err = s.ship()
    assert code == 1, err
    assert set(results(report).values()) == {"rolled back"}, err
    for name in s.names:
        line = outcome(err, name)
        assert "web" in line and "unhealthy" in line, line
    assert consistent(s) == before
    s.change()
    recovers(s)


def test_13_changed_host_key_is_refused_before_anything_runs(suite: Suite) -> None:
    s = suite
    other, changed = s.names
    before = consistent(s)
    kept = releases_on(s, changed)
    s.change()
    with faults.new_host_key(s.container(changed)):
        code, report, err = s.ship()
        assert code == 1, err
        assert results(report) == {changed: "failed", other: "deployed"}, err
        line = outcome(err, changed)
        assert f"host key for {s.address(changed)} has CHANGED" in line, line
        assert report is not None
        steps = next(h["steps"] for h in report["hosts"] if h["host"] == changed)
        assert {st["step"] for st in steps} <= {"read current release"}, steps  # no command ran
        now = consistent(s)
        assert now[changed] == before[changed]
        assert releases_on(s, changed) == kept  # nothing uploaded
    recovers(s)


def test_14_user_without_passwordless_sudo(suite: Suite) -> None:
    s = suite
    bare, other = s.names
    before = consistent(s)
    s.change()
    with faults.no_privileges(s.container(bare), s.info.ssh_user):
        code, report, err = s.ship()
        assert code == 1, err
        assert results(report) == {bare: "failed", other: "deployed"}, err
        line = outcome(err, bare)
        # One line says what is wrong, where, and what to do.
        assert "check docker" in line and f"user {s.info.ssh_user}" in line, line
        assert "has no passwordless sudo" in line and "(hint: " in line, line
        now = consistent(s)
        assert now[bare] == before[bare]
    recovers(s)


def test_15_disk_full_during_upload(suite: Suite) -> None:
    s = suite
    full, other = s.names
    before = consistent(s)
    kept = releases_on(s, full)
    with big_file(s, 4):
        s.change()
        with faults.small_disk(s.container(full), DEPLOY_DIR, room_kib=1024):
            code, report, err = s.ship()
            assert code == 1, err
            assert results(report) == {full: "failed", other: "deployed"}, err
            line = outcome(err, full)
            # An upload that ran out of room, or (with a free-space check) a
            # refusal before it: either way the host names its disk.
            assert ("upload release" in line and "No space left" in line) or (
                "space" in line.lower()), line
            now = consistent(s)
            assert now[full] == before[full]
            assert [r for r in releases_on(s, full) if not r.endswith(".partial")] == kept
        recovers(s)


def test_16_dockerd_restarted_mid_deploy(suite: Suite) -> None:
    s = suite
    hit, other = s.names
    before = consistent(s)
    s.change()
    run = s.watch()
    run.wait_step("compose up", (hit,))
    faults.restart_dockerd(s.container(hit))
    code, report, err = s.finish(run)
    res = results(report)
    assert res[other] == "deployed", err
    assert res[hit] in ("deployed", "rolled back", "failed"), err
    assert code == (0 if res[hit] == "deployed" else 1), err
    now = consistent(s)
    if res[hit] == "deployed":
        assert now[hit] != before[hit]
    else:
        assert now[hit] == before[hit]
        line = outcome(err, hit)
        assert "compose up" in line or "wait healthy" in line, line
    recovers(s)


def test_no_secret_in_any_output(suite: Suite) -> None:
    assert len(OUTPUTS) > 10
    for text in OUTPUTS:
        assert suite.info.registry.password not in text
