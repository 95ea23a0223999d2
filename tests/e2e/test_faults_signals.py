"""Fault scenarios 8-12 of issue 15 on the sandbox: a concurrent ship,
Ctrl-C during wait-healthy, a second Ctrl-C, SIGTERM, and ``kill -9`` of
deployer during ``compose up`` (and during the health wait).

One sandbox of two hosts (Docker preinstalled) and ``tests/e2e/apps/rollapp``
with a compose file whose healthcheck passes only once a file named after
the release's greeting exists in ``shared/ready/`` on the host: a release
waits for health exactly as long as the test wants, so "during wait-healthy"
is a state the test sees in deployer's progress (never a sleep), and it
ends when the test creates the file. Rollout batches are ``[1, 100%]``:
``sandbox-1`` is in flight when the signal comes, ``sandbox-2`` is not.

After each scenario: every host serves exactly the old or the new release
(what it serves is what ``current`` says), no ``.lock``, no
``.docker-config-*`` and no apply marker is left, and the next plain ``ship``
succeeds. The lock lease is 6 s here (``DEPLOYER_LOCK_LEASE``), so the
``kill -9`` scenarios wait (polling the host's clock) only that long.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .test_rollout import ROLLAPP, WEB_PORT, Project, app_sandbox, get, results, validate

pytestmark = pytest.mark.e2e

APP = "/opt/rollapp"
LEASE = 6
H1, H2 = "sandbox-1", "sandbox-2"

COMPOSE = """\
services:
  web:
    image: {{ images.web | tojson }}
    restart: unless-stopped
    ports:
      - "{{ web_port }}:8000"
    volumes:
      - ./config.json:/app/config.json:ro
      - ./ready:/ready:ro
    healthcheck:
      test: ["CMD", "test", "-e", "/ready/{{ greeting }}"]
      interval: 1s
      timeout: 3s
      retries: 3
      start_period: 600s
"""


@pytest.fixture(scope="module")
def p(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    with app_sandbox(tmp_path_factory.mktemp("signals"), ROLLAPP, 2,
                     {"DEPLOYER_LOCK_LEASE": str(LEASE)}) as proj:
        (proj.root / "templates" / "docker-compose.yaml.j2").write_text(COMPOSE)
        yield proj


# -- helpers ----------------------------------------------------------------


def configure(p: Project, greeting: str) -> None:
    p.write_inventory({"app": {"hosts": p.names()}}, {"web_port": WEB_PORT, "greeting": greeting},
                      {"batches": [1, "100%"]})


def ready(p: Project, greeting: str, *hosts: str) -> None:
    """Let releases with this greeting pass their healthcheck."""
    for n in hosts or p.names():
        p.sh(n, f"mkdir -p {APP}/shared/ready && touch {APP}/shared/ready/{greeting}")


def leftovers(p: Project, n: str) -> list[str]:
    return p.sh(n, f"cd {APP} && ls -A | grep -E '^(\\.lock|\\.docker-config-|\\.applying)' "
                   "|| true").split()


def check_hosts(p: Project, expect: dict[str, str], context: str = "") -> None:
    """Each host serves the greeting expected of it, from the release
    ``current`` points at, and nothing of a run is left on it. ``context``:
    the last run's stderr, for the failure message."""
    for n, greeting in expect.items():
        body = get(p.address(n))
        assert (body["greeting"], body["release"]) == (greeting, p.current(n)), (n, body, context)
        assert leftovers(p, n) == [], (n, context)


def converge(p: Project, greeting: str) -> None:
    """The next plain ship succeeds and leaves every host on ``greeting``."""
    ready(p, greeting)
    configure(p, greeting)
    report, _, err = p.ship()
    assert report["result"] == "success", err
    check_hosts(p, dict.fromkeys(p.names(), greeting), err)


class Run:
    """``deployer -o json ship sandbox`` in the background, its stderr read
    line by line as it comes."""

    def __init__(self, p: Project) -> None:
        self.proc = subprocess.Popen(p.cmd("-o", "json", "ship", "sandbox"), env=p.env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._new = threading.Condition()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._new:
                self.lines.append(line)
                self._new.notify_all()

    @property
    def err(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 600) -> None:
        """Until a stderr line matches ``pattern`` (fails if the run ends first)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._new:
            while not any(rx.search(ln) for ln in self.lines):
                if self.proc.poll() is not None and not self._reader.is_alive():
                    pytest.fail(f"never saw {pattern!r}; exit {self.proc.returncode}:\n"
                                + self.err)
                if time.monotonic() > deadline:
                    pytest.fail(f"never saw {pattern!r}:\n{self.err}")
                self._new.wait(0.5)

    def step(self, host: str, step: str) -> None:
        self.wait_for(rf"\] {re.escape(host)}: {re.escape(step)}$")

    def finish(self, code: int) -> dict[str, Any]:
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        self.proc.wait(timeout=600)
        self._reader.join(timeout=10)
        assert self.proc.returncode == code, f"exit {self.proc.returncode}\n{out}\n{self.err}"
        return validate(json.loads(out))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=60)


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    made: list[Run] = []
    yield made
    for r in made:
        r.kill()


def host(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(h for h in report["hosts"] if h["host"] == name)


# -- the scenarios, in order: each starts from the last one's hosts ---------


def test_first_ship(p: Project) -> None:
    converge(p, "one")


def test_8_concurrent_ship_one_wins_the_other_names_the_holder(
        p: Project, runs: list[Run]) -> None:
    configure(p, "two")
    first = Run(p)
    runs.append(first)
    first.step(H1, "wait healthy")  # it holds sandbox-1's lock now
    releases_before = p.sh(H1, f"ls {APP}/releases")
    second = p.run("-o", "json", "ship", "sandbox", check=1)
    report = validate(json.loads(second.stdout))
    refused = host(report, H1)
    assert refused["result"] == "failed"
    assert re.search(rf"locked by \S+ since \S+ \(.*run \w+, pid {first.proc.pid} on ",
                     refused["error"]), refused["error"]
    assert host(report, H2)["result"] == "skipped"  # the failure stopped its rollout
    # nothing of the refused run reached the host
    assert p.sh(H1, f"ls {APP}/releases") == releases_before
    assert report["release"] not in p.sh(H2, f"ls {APP}/releases")
    ready(p, "two")
    won = first.finish(0)
    assert results(won) == {H1: "deployed", H2: "deployed"}
    check_hosts(p, {H1: "two", H2: "two"})


def test_9_ctrl_c_during_wait_healthy_finishes_the_host_in_flight(
        p: Project, runs: list[Run]) -> None:
    configure(p, "three")
    run = Run(p)
    runs.append(run)
    run.step(H1, "wait healthy")
    run.proc.send_signal(signal.SIGINT)
    run.wait_for(r"^SIGINT: starting no more hosts")
    ready(p, "three", H1)  # the host in flight passes its gate
    report = run.finish(130)
    assert report["result"] == "interrupted"
    assert results(report) == {H1: "deployed", H2: "skipped"}
    check_hosts(p, {H1: "three", H2: "two"})
    converge(p, "three")


def test_10_second_ctrl_c_rolls_back_and_exits_130(p: Project, runs: list[Run]) -> None:
    old = p.current(H1)
    configure(p, "four")
    run = Run(p)
    runs.append(run)
    run.step(H1, "wait healthy")
    run.proc.send_signal(signal.SIGINT)
    run.wait_for(r"^SIGINT: starting no more hosts")
    run.proc.send_signal(signal.SIGINT)
    # no file for "four": without the second Ctrl-C this would wait 60 s
    report = run.finish(130)
    h1 = host(report, H1)
    assert (h1["result"], h1["release"]) == ("rolled back", old), h1
    assert "interrupted" in h1["error"]
    assert host(report, H2)["result"] == "skipped"
    assert p.current(H1) == old
    check_hosts(p, {H1: "three", H2: "three"})
    converge(p, "four")


def test_11_sigterm_acts_as_the_first_ctrl_c(p: Project, runs: list[Run]) -> None:
    configure(p, "five")
    run = Run(p)
    runs.append(run)
    run.step(H1, "wait healthy")
    run.proc.send_signal(signal.SIGTERM)
    run.wait_for(r"^SIGTERM: starting no more hosts")
    ready(p, "five", H1)
    report = run.finish(130)
    assert results(report) == {H1: "deployed", H2: "skipped"}
    check_hosts(p, {H1: "five", H2: "four"})
    converge(p, "five")


def wait_lease_over(p: Project, n: str) -> None:
    """The killed run's lock is still there; poll the host's clock until its
    lease has passed."""
    info = p.sh(n, f"cat {APP}/.lock/info")
    until = int(re.search(r"^lease_until=(\d+)$", info, re.M).group(1))  # type: ignore[union-attr]
    deadline = time.monotonic() + 10 * LEASE
    while int(p.sh(n, "date +%s")) <= until:
        assert time.monotonic() < deadline, info
        time.sleep(0.5)


def kill_at(p: Project, runs: list[Run], step: str) -> None:
    run = Run(p)
    runs.append(run)
    run.step(H1, step)
    os.kill(run.proc.pid, signal.SIGKILL)
    run.proc.wait(timeout=60)
    left = leftovers(p, H1)
    assert ".lock" in left and any(x.startswith(".docker-config-") for x in left), left
    wait_lease_over(p, H1)


def test_12_kill_9_during_compose_up_next_plain_ship_recovers(
        p: Project, runs: list[Run]) -> None:
    ready(p, "six")
    configure(p, "six")
    kill_at(p, runs, "compose up")
    report, _, err = p.ship()  # no unlock, nothing by hand
    assert report["result"] == "success", err
    assert re.search(rf"{H1}: took over the deploy lock, its lease had ended: was locked by ",
                     err), err
    assert results(report) == {H1: "deployed", H2: "deployed"}
    check_hosts(p, {H1: "six", H2: "six"})


def test_12b_kill_9_during_wait_healthy_a_half_applied_host_is_reconciled(
        p: Project, runs: list[Run]) -> None:
    """Killed after compose up: the new release's containers run while
    ``current`` is the old one. A ship of the old release (whose plan equals
    ``current``) must not call the host unchanged: it brings the old release
    back through the health gate."""
    old = p.current(H1)
    configure(p, "seven")  # no ready file: it waits
    kill_at(p, runs, "wait healthy")
    assert get(p.address(H1))["greeting"] == "seven"  # the half-applied state
    assert p.current(H1) == old
    configure(p, "six")
    report, _, err = p.ship()
    assert report["result"] == "success", err
    h1 = host(report, H1)
    assert h1["result"] == "rolled back" and h1["release"] == old, h1
    assert "reconciled" in h1["detail"], h1
    assert host(report, H2)["result"] == "unchanged"
    check_hosts(p, {H1: "six", H2: "six"})
    again, _, err = p.ship()
    assert results(again) == {H1: "unchanged", H2: "unchanged"}, err
