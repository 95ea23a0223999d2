"""Inventory-driven rollout end to end on the sandbox (issue 7): canary
batches, parallelism, the failure policy, command-line overrides, Ctrl-C,
roles across hosts, and the JSON report against its shipped schema.

Two sandboxes, one per class, each torn down when its class is done:

- ``TestRollout``: 4 hosts with Docker preinstalled and ``tests/e2e/apps/rollapp``
  (one ``web`` service, standard-library Python; ``/`` answers with the
  host's rendered config, so a test can tell which release a host serves, and
  a host var ``healthy: false`` breaks the healthcheck on that host only).
- ``TestRoles``: 3 hosts and ``examples/flask-postgres`` with a ``db`` group
  (PostgreSQL and the migrations) and a ``web`` group (the app).

Order and overlap are read from the plain progress lines that ``-o json``
writes to stderr (one lock, one stream: their order is the order of events),
never from timings.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from conftest import copy_tracked

from e2e.helpers import deployer_argv, deployer_env, results, run_deployer

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ROLLAPP = Path(__file__).parent / "apps" / "rollapp"
FLASK = ROOT / "examples" / "flask-postgres"
BASE_IMAGE = os.environ.get("DEPLOYER_SANDBOX_BASE_IMAGE", "debian:bookworm")
WEB_PORT = 8000
DB_PASSWORD = "pg-Roles-e2e-0815"
RESULTS = ("deployed", "unchanged", "failed", "rolled back", "skipped", "ok")

SCHEMA = json.loads(files("deployer.report").joinpath("schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

LINE = re.compile(r"^\[\s*[\d.]+s\] (.*)$")
DONE = re.compile(r"^(\S+): (" + "|".join(RESULTS) + r")(?: \(.*\))? in [\d.]+s$")


# --------------------------------------------------------------------------
# Helpers


def validate(report: dict[str, Any]) -> dict[str, Any]:
    """Every report a test reads is first checked against the shipped schema."""
    VALIDATOR.validate(report)
    return report


def events(stderr: str) -> list[str]:
    """The progress events, in order, without their timestamps."""
    return [m.group(1) for line in stderr.splitlines() if (m := LINE.match(line))]


def batches(ev: list[str]) -> list[list[str]]:
    return [e.split(": ", 1)[1].split(", ") for e in ev if e.startswith("== batch ")]


def first_event(ev: list[str], host: str) -> int:
    return next(i for i, e in enumerate(ev) if e.startswith(f"{host}: "))


def done_event(ev: list[str], host: str) -> int:
    return next(i for i, e in enumerate(ev) if (m := DONE.match(e)) and m.group(1) == host)


def header(ev: list[str], no: int) -> int:
    return next(i for i, e in enumerate(ev) if e.startswith(f"== batch {no}: "))


def get(address: str, path: str = "/") -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{address}:{WEB_PORT}{path}", timeout=10) as r:
        return json.loads(r.read())


def post(address: str, path: str, data: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        f"http://{address}:{WEB_PORT}{path}", data=json.dumps(data).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


class Project:
    """A copy of an app next to its own sandbox, driven through the CLI."""

    def __init__(self, root: Path, info: Any, env: dict[str, str]) -> None:
        self.root = root
        self.info = info
        self.env = deployer_env(env)
        inv = root / "inventories" / "sandbox.yaml"
        # What `sandbox up` wrote above its hosts (ssh, registry, secrets);
        # each test writes its own groups, vars and rollout below it.
        self.base = inv.read_text().split("\ngroups:\n")[0] + "\n"
        self.inventory = inv

    @property
    def hosts(self) -> list[Any]:
        return self.info.hosts  # type: ignore[no-any-return]

    def names(self) -> list[str]:
        return [h.name for h in self.hosts]

    def address(self, name: str) -> str:
        return self.info.host(name).address  # type: ignore[no-any-return]

    def write_inventory(
        self,
        groups: dict[str, dict[str, Any]],
        vars: dict[str, Any],
        rollout: dict[str, Any] | None = None,
        host_vars: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        """``groups``: name -> {"hosts": [names], other group keys...}."""
        host_vars = host_vars or {}
        doc: dict[str, Any] = {"vars": vars, "groups": {}}
        for g, spec in groups.items():
            entry = {k: v for k, v in spec.items() if k != "hosts"}
            entry["hosts"] = {
                n: {"address": self.address(n), **({"vars": host_vars[n]} if n in host_vars
                                                   else {})}
                for n in spec["hosts"]
            }
            doc["groups"][g] = entry
        if rollout is not None:
            doc["rollout"] = rollout
        self.inventory.write_text(self.base + yaml.safe_dump(doc, sort_keys=False))

    def cmd(self, *args: str) -> list[str]:
        return deployer_argv(self.root, *args)

    def run(self, *args: str, check: int | None = 0,
            timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return run_deployer(self.root, *args, env=self.env, check=check, timeout=timeout)

    def ship(self, *args: str, check: int = 0) -> tuple[dict[str, Any], list[str], str]:
        """``-o json ship sandbox ARGS``: (validated report, events, stderr)."""
        p = self.run("-o", "json", "ship", "sandbox", *args, check=check)
        return validate(json.loads(p.stdout)), events(p.stderr), p.stderr

    def sh(self, name: str, script: str) -> str:
        return subprocess.run(
            ["docker", "exec", self.info.host(name).container, "sh", "-c", script],
            capture_output=True, text=True, check=True).stdout

    def current(self, name: str) -> str:
        return self.sh(name, f"basename $(readlink /opt/{self.app}/current)").strip()

    @property
    def app(self) -> str:
        return str(yaml.safe_load((self.root / "deployer.yaml").read_text())["app"])


@contextlib.contextmanager
def app_sandbox(tmp: Path, src: Path, hosts: int, env: dict[str, str]) -> Iterator[Project]:
    """A copy of the app ``src`` in ``tmp`` with its own sandbox of ``hosts``
    hosts (Docker preinstalled), torn down on the way out."""
    from deployer.sandbox import manager

    copy_tracked(src, tmp)
    try:
        info = manager.up(tmp, hosts=hosts, base_image=BASE_IMAGE, with_docker=True)
        yield Project(tmp, info, env)
    finally:
        manager.down(tmp)


# --------------------------------------------------------------------------
# Rollout policy on 4 hosts


@pytest.fixture(scope="class")
def roll(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    with app_sandbox(tmp_path_factory.mktemp("rollapp"), ROLLAPP, 4, {}) as p:
        yield p


def all_hosts(p: Project) -> dict[str, dict[str, Any]]:
    return {"app": {"hosts": p.names()}}


V = {"web_port": WEB_PORT}


class TestRollout:
    """Runs in order: the first ship makes the old release the later tests
    must find still serving."""

    def test_canary_finishes_before_the_rest_which_run_concurrently(self, roll: Project) -> None:
        roll.write_inventory(all_hosts(roll), {**V, "greeting": "one"},
                             {"batches": [1, "50%"]})
        report, ev, err = roll.ship()
        names = roll.names()
        assert results(report) == dict.fromkeys(names, "deployed"), err
        # 50% of 4 is 2; the last size repeats for what is left.
        assert batches(ev) == [names[:1], names[1:3], names[3:]], err
        assert [h["batch"] for h in report["hosts"]] == [1, 2, 2, 3]
        canary, (a, b), last = names[0], names[1:3], names[3]
        # The canary is done before batch 2 is announced, and no other host
        # has done anything before that.
        assert done_event(ev, canary) < header(ev, 2)
        for other in names[1:]:
            assert first_event(ev, other) > header(ev, 2)
        # Batch 2 runs concurrently: each host starts before the other ends.
        assert first_event(ev, a) < done_event(ev, b), err
        assert first_event(ev, b) < done_event(ev, a), err
        # Both are done before batch 3 starts.
        assert max(done_event(ev, a), done_event(ev, b)) < header(ev, 3) < first_event(ev, last)
        for n in names:
            body = get(roll.address(n))
            assert body["greeting"] == "one" and body["host"] == n
            assert body["release"] == report["release"] == roll.current(n)

    def test_failing_canary_stops_the_rollout(self, roll: Project) -> None:
        names = roll.names()
        old = {n: roll.current(n) for n in names}
        roll.write_inventory(all_hosts(roll), {**V, "greeting": "two"},
                             {"batches": [1, "50%"]}, host_vars={names[0]: {"healthy": False}})
        report, ev, err = roll.ship(check=1)
        assert results(report) == {names[0]: "rolled back",
                                   **dict.fromkeys(names[1:], "skipped")}, err
        assert report["result"] == "failure"
        canary = report["hosts"][0]
        assert "web" in canary["error"] and "unhealthy" in canary["error"]
        assert canary["release"] == old[names[0]]
        for h in report["hosts"][1:]:
            assert "not reached" in h["detail"]
            assert h["steps"] == []
        # Only batch 1 started; the skipped hosts were never touched.
        assert batches(ev) == [names[:1]], err
        assert not any(e.startswith(tuple(f"{n}: " for n in names[1:])) and not DONE.match(e)
                       for e in ev), err
        for n in names:
            body = get(roll.address(n))
            assert body["greeting"] == "one"
            assert body["release"] == old[n] == roll.current(n)

    def test_max_fail_percentage_lets_the_rollout_continue(self, roll: Project) -> None:
        names = roll.names()
        old = roll.current(names[1])
        # One host per batch; the bad host is in batch 2, not the canary, and
        # batches 3 and 4 still run: 1 failure of 4 is within 50%.
        roll.write_inventory(all_hosts(roll), {**V, "greeting": "three"},
                             {"batches": [1, "25%"], "max_fail_percentage": 50},
                             host_vars={names[1]: {"healthy": False}})
        # Plain output this time: the summary table and line a person reads
        # (the JSON report's counts are checked by the other tests).
        err = roll.run("ship", "sandbox", check=1).stderr
        ev = events(err)
        assert "failure: 3 deployed, 1 rolled back" in err, err
        rows = dict(m.groups() for line in err.splitlines()
                    if (m := re.match(r"^\W*(sandbox-\d+)\W+(" + "|".join(RESULTS) + r")\b",
                                      line)))
        assert rows == {**dict.fromkeys(names, "deployed"), names[1]: "rolled back"}, err
        assert batches(ev) == [[n] for n in names], err
        assert done_event(ev, names[1]) < header(ev, 3)
        assert get(roll.address(names[1]))["greeting"] == "one"
        assert roll.current(names[1]) == old
        for n in (names[0], names[2], names[3]):
            assert get(roll.address(n))["greeting"] == "three"

    def test_command_line_overrides_the_inventory(self, roll: Project) -> None:
        names = roll.names()
        roll.write_inventory(all_hosts(roll), {**V, "greeting": "four"},
                             {"batches": [1, "50%"], "max_parallel": 20})
        report, ev, err = roll.ship("--batches", "3,100%", "--max-parallel", "1")
        assert set(results(report).values()) == {"deployed"}, err
        assert batches(ev) == [names[:3], names[3:]], err
        # --max-parallel 1: inside batch 1, each host is done before the next starts.
        order = sorted(names[:3], key=lambda n: first_event(ev, n))
        for prev, nxt in itertools.pairwise(order):
            assert done_event(ev, prev) < first_event(ev, nxt), err
        for n in names:
            assert get(roll.address(n))["greeting"] == "four"

    def test_ctrl_c_finishes_hosts_in_flight_and_skips_the_rest(self, roll: Project) -> None:
        names = roll.names()
        before = {n: roll.current(n) for n in names}
        roll.write_inventory(all_hosts(roll), {**V, "greeting": "five"},
                             {"batches": [2, "100%"]})
        proc = subprocess.Popen(roll.cmd("-o", "json", "ship", "sandbox"), env=roll.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        lines: queue.Queue[str] = queue.Queue()
        seen: list[str] = []
        assert proc.stderr is not None and proc.stdout is not None

        def pump() -> None:
            for line in proc.stderr:  # type: ignore[union-attr]
                lines.put(line)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        first = names[:2]
        # Interrupt once both hosts of batch 1 are past their last safe point
        # (compose up), or as soon as one of them is waiting for health.
        upped: set[str] = set()
        deadline = time.monotonic() + 600
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    line = lines.get(timeout=0.5)
                except queue.Empty:
                    continue
                seen.append(line)
                m = LINE.match(line.rstrip("\n"))
                if not m:
                    continue
                host, _, step = m.group(1).partition(": ")
                if host in first and step == "compose up":
                    upped.add(host)
                if upped == set(first) or (host in first and step == "wait healthy"):
                    os.killpg(proc.pid, signal.SIGINT)
                    break
            else:
                pytest.fail("batch 1 never reached compose up:\n" + "".join(seen))
            out = proc.stdout.read()
            proc.wait(timeout=600)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        reader.join(timeout=10)
        while not lines.empty():
            seen.append(lines.get())
        err = "".join(seen)
        assert proc.returncode == 130, f"exit {proc.returncode}\n{out}\n{err}"
        assert "SIGINT: starting no more hosts; hosts in flight finish" in err
        report = validate(json.loads(out))
        assert report["result"] == "interrupted"
        res = results(report)
        ev = events(err)
        # Hosts that had started compose up finished it: new release or old one back.
        assert upped, err
        for n in upped:
            assert res[n] in ("deployed", "rolled back"), err
        for n in set(first) - upped:  # stopped at a safe point before compose up
            assert res[n] == "skipped" and "interrupted" in report["hosts"][names.index(n)][
                "detail"], err
        # Batch 2 never started.
        assert batches(ev) == [first], err
        for n in names[2:]:
            assert res[n] == "skipped", err
        for n in names:
            rel = roll.current(n)
            listing = roll.sh(n, "cd /opt/rollapp/releases && for d in *; do "
                              "if [ -f \"$d/manifest.json\" ]; then echo ok $d; "
                              "else echo incomplete $d; fi; done; "
                              "test -e /opt/rollapp/.lock && echo locked || true")
            assert f"ok {rel}" in listing and "incomplete" not in listing, listing
            assert "locked" not in listing
            body = get(roll.address(n))
            assert body["release"] == rel
            if res[n] == "deployed":
                assert body["greeting"] == "five" and rel != before[n]
            else:
                assert body["greeting"] == "four" and rel == before[n]

    def test_schema_rejects_a_report_that_breaks_it(self) -> None:
        """The schema is not vacuous: the validation the tests above rely on
        refuses an unknown result and a missing field."""
        good = {"schema_version": 1, "command": "ship", "app": "a", "env": "e",
                "result": "success", "counts": {}, "seconds": 0.1,
                "hosts": [{"host": "h", "result": "deployed", "seconds": 1.0, "steps": []}]}
        validate(good)
        bad_result = json.loads(json.dumps(good))
        bad_result["hosts"][0]["result"] = "exploded"
        missing = json.loads(json.dumps(good))
        del missing["hosts"][0]["steps"]
        for bad in (bad_result, missing):
            with pytest.raises(jsonschema.ValidationError):
                validate(bad)


# --------------------------------------------------------------------------
# Roles: PostgreSQL on one host, the app on two others


@pytest.fixture(scope="class")
def roles(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    with app_sandbox(tmp_path_factory.mktemp("roles"), FLASK, 3,
                     {"DB_PASSWORD": DB_PASSWORD}) as p:
        yield p


def services_running(p: Project, name: str) -> set[str]:
    """Compose services of the app running on a host, as its own dockerd sees them."""
    out = p.sh(name, "docker ps --filter label=com.docker.compose.project=flaskpg "
                     "--format '{{.Label \"com.docker.compose.service\"}}'")
    return {s for s in out.split() if s}


class TestRoles:
    def test_db_and_web_on_their_own_hosts_connected_across(self, roles: Project) -> None:
        db, web1, web2 = roles.names()
        roles.write_inventory(
            {"db": {"services": ["db", "migrate"], "hosts": [db]},
             "web": {"services": ["web"], "hosts": [web1, web2]}},
            {"greeting": "roles", "web_port": WEB_PORT, "workers": 1, "db_name": "flaskpg",
             "db_user": "flaskpg", "db_password": "${DB_PASSWORD}"},
            # The db host first: the web hosts start once PostgreSQL is up and migrated.
            {"batches": [1, "100%"]},
        )
        report, ev, err = roles.ship()
        assert results(report) == {db: "deployed", web1: "deployed", web2: "deployed"}, err
        assert batches(ev) == [[db], [web1, web2]], err
        assert DB_PASSWORD not in err and DB_PASSWORD not in json.dumps(report)
        # Which containers run where, from each host's own Docker.
        assert services_running(roles, db) == {"db"}  # migrate ran there and exited
        assert roles.sh(db, "docker ps -a --filter label=com.docker.compose.service=migrate "
                            "--format '{{.Status}}'").startswith("Exited (0)")
        for w in (web1, web2):
            assert services_running(roles, w) == {"web"}
            assert "postgres" not in roles.sh(w, "docker ps --format '{{.Image}}'")
        # The web hosts answer from the db host's PostgreSQL: a note written
        # through one web host is read through the other.
        note = post(roles.address(web1), "/notes", {"body": "across hosts"})
        body = get(roles.address(web2))
        assert "PostgreSQL" in body["database"]
        assert body["greeting"] == "roles"
        assert note["id"] in [n["id"] for n in body["latest"]]
        assert body["notes"] == 1
        assert body["served_by"] != get(roles.address(web1))["served_by"]
