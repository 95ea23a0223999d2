"""The per-host ship state machine against a scripted executor, as a table.

Each case scripts what the host answers (per command description: exit
code and stdout, in order), and states the commands ship must send, in
order, and the report it must end with. The interrupt cases run the first
release with Ctrl-C arriving as each step starts.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import ENV, MakeProject

from deployer.commands.facts import MARKER
from deployer.commands.release import STATE_MARKER
from deployer.config import load_project
from deployer.deploy.dryrun import PLAN_FACTS, healthy_rows
from deployer.deploy.runner import run_host
from deployer.deploy.ship import HostShip, ShipSettings
from deployer.plan import HostPlan, build_plan, image_refs
from deployer.remote.recording import Answers, Call, ScriptedExecutor
from deployer.remote.ssh import UnreachableError
from deployer.report.model import HostReport, RunReport

NEW = "r2"  # the release this ship creates
OLD = "r1"
FAILED_RECORD = f"record that {NEW} failed its health gate"
D = "/opt/shop"
FACTS = MARKER + "\n" + "".join(f"{k}={v}\n" for k, v in PLAN_FACTS.items())
HEALTHY = healthy_rows("shop", ["web"], [])
UNHEALTHY = json.dumps({"name": "/shop-web-1", "service": "web", "restart_policy": "always",
                        "state": {"Status": "exited", "ExitCode": 1}}) + "\n"
LOCK_HELD = (3, "who=alice@laptop\nwhen=2026-01-01T10:00:00Z\nrelease=r9\nmessage=\n")


def state(current: str | None, fingerprint: str = "other") -> str:
    text = f"{STATE_MARKER}\nexists={int(bool(current))}\nwritable={int(bool(current))}\n"
    text += f"current={current or ''}\n"
    if current:  # deployed by this deployer: the dir has its owner file
        text += "owner_app=shop\nowner_env=prod\nowner_project=shop\n"
        text += "--- manifest\n" + json.dumps({"release": current, "fingerprint": fingerprint,
                                                "services": ["web"]}) + "\n"
    return text


# -- the expected command sequences, by description -----------------------

BEFORE_LOCK = ["read current release", "probe host facts"]
PREPARE = [f"prepare {D}"]
LOCKED = [
    "take the deploy lock",
    "remove stale partial uploads",
    "remove stale registry credentials",
    "check free space",
    f"unpack the release into releases/{NEW}.partial",
    f"finalize release {NEW}",
    "create shared directories",
    "docker login registry.example.com:5000",
    "compose pull",
    f"mark {NEW} as being applied",
    "compose up",
    "check container health",
]
DEPLOYED_TAIL = [f"switch current to {NEW}", "clear the apply marker", "prune releases (keep 5)",
                 "read the kept releases' images", "list the app's images"]
SETTLED = ["clear the apply marker"]
CLEANUP = ["remove the run's registry credentials", "release the deploy lock"]
# A dir without an owner file: the host's compose projects are looked at
# before anything changes, and the dir is claimed under the lock.
UNOWNED = ["list compose projects on the host"]
CLAIM = ["take the deploy lock", "claim the deploy dir"]
FIRST = BEFORE_LOCK + UNOWNED + PREPARE + CLAIM + LOCKED[1:] + DEPLOYED_TAIL + CLEANUP
CHANGE = BEFORE_LOCK + LOCKED + DEPLOYED_TAIL + CLEANUP


@dataclass
class Case:
    id: str
    answers: dict[str, list[Any]]
    commands: list[str]
    result: str
    release: str | None
    error: str | None = None  # a part of the report's error
    rolled_back_from: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def cases(fp: str) -> list[Case]:
    """``fp``: the fingerprint of the plan being shipped."""
    return [
        Case("first release", {"read current release": [(0, state(None))]}, FIRST,
             "deployed", NEW),
        Case("no-op", {"read current release": [(0, state(OLD, fp))]},
             ["read current release"], "unchanged", OLD),
        Case("change", {"read current release": [(0, state(OLD))],
                        "take the deploy lock": [(0, f"current={OLD}\n")]},
             CHANGE, "deployed", NEW),
        Case("unhealthy release rolled back",
             {"read current release": [(0, state(OLD))],
              "take the deploy lock": [(0, f"current={OLD}\n")],
              "check container health": [(0, UNHEALTHY), (0, HEALTHY)]},
             BEFORE_LOCK + LOCKED + ["compose logs web", FAILED_RECORD,
                                     f"mark {OLD} as being applied",
                                     "compose up", "check container health", *SETTLED]
             + CLEANUP,
             "rolled back", OLD, error="web: exited with code 1", rolled_back_from=NEW),
        Case("compose up fails as a container failed under it: that service is named",
             {"read current release": [(0, state(OLD))],
              "take the deploy lock": [(0, f"current={OLD}\n")],
              "compose up": [(1, ""), (0, "")],
              "check container health": [(0, UNHEALTHY), (0, HEALTHY)]},
             BEFORE_LOCK + LOCKED + ["compose logs web", FAILED_RECORD,
                                     f"mark {OLD} as being applied",
                                     "compose up", "check container health", *SETTLED]
             + CLEANUP,
             "rolled back", OLD, error="web: exited with code 1 (web-1: compose up: exit code 1)",
             rolled_back_from=NEW),
        Case("compose up fails, no container failed: compose's own words",
             {"read current release": [(0, state(OLD))],
              "take the deploy lock": [(0, f"current={OLD}\n")],
              "compose up": [(1, ""), (0, "")],
              "check container health": [(0, HEALTHY)]},
             BEFORE_LOCK + LOCKED + [FAILED_RECORD, f"mark {OLD} as being applied", "compose up",
                                     "check container health", *SETTLED] + CLEANUP,
             "rolled back", OLD, error="web-1: compose up: exit code 1", rolled_back_from=NEW),
        Case("failed first release",
             {"read current release": [(0, state(None))],
              "check container health": [(0, UNHEALTHY)]},
             BEFORE_LOCK + UNOWNED + PREPARE + CLAIM + LOCKED[1:]
             + ["compose logs web", FAILED_RECORD, "compose down", *SETTLED]
             + CLEANUP,
             "failed", None, error="first release: nothing to roll back to"),
        Case("lock held",
             {"read current release": [(0, state(OLD))], "take the deploy lock": [LOCK_HELD]},
             [*BEFORE_LOCK, "take the deploy lock"], "failed", OLD,
             error="locked by alice@laptop since 2026-01-01T10:00:00Z"),
        Case("state changed under the lock: now unchanged",
             {"read current release": [(0, state(OLD)), (0, state("r3", fp))],
              "take the deploy lock": [(0, "current=r3\n")]},
             [*BEFORE_LOCK, "take the deploy lock", "read current release",
              "release the deploy lock"],
             "unchanged", "r3"),
        Case("state changed under the lock: rolls back to what is current now",
             {"read current release": [(0, state(OLD)), (0, state("r3"))],
              "take the deploy lock": [(0, "current=r3\n")],
              "check container health": [(0, UNHEALTHY), (0, HEALTHY)]},
             [*BEFORE_LOCK, "take the deploy lock", "read current release", *LOCKED[1:],
              "compose logs web", FAILED_RECORD, "mark r3 as being applied", "compose up",
              "check container health", *SETTLED, *CLEANUP],
             "rolled back", "r3", error="web: exited with code 1", rolled_back_from=NEW),
        Case("upload fails: the lock is given back, the error names the step",
             {"read current release": [(0, state(OLD))],
              "take the deploy lock": [(0, f"current={OLD}\n")],
              f"unpack the release into releases/{NEW}.partial": [(1, "")]},
             [*BEFORE_LOCK, *LOCKED[:5], "release the deploy lock"], "failed", NEW,
             error="upload release: exit code 1"),
        Case("unreachable host",
             {"read current release": [UnreachableError("web-1", "connection refused")]},
             ["read current release"], "failed", NEW,
             error="read current release: unreachable (connection refused)"),
    ]


# -- running one case -------------------------------------------------------


class StepHook:
    """A reporter that calls ``on_step`` as each step starts."""

    def __init__(self, on_step: Any = None) -> None:
        self.on_step = on_step
        self.steps: list[str] = []

    def start(self, hosts: list[str], batches: list[int]) -> None: ...
    def batch(self, no: int, hosts: list[str]) -> None: ...

    def step(self, host: str, step: str) -> None:
        self.steps.append(step)
        if self.on_step:
            self.on_step(step)

    def log(self, host: str, line: str) -> None: ...

    def host_done(self, report: HostReport) -> None: ...

    def finish(self, run: RunReport) -> None: ...


@pytest.fixture
def hp(make_project: MakeProject) -> tuple[Any, HostPlan]:
    project = load_project(make_project(), "prod", ENV)
    hosts = project.select("web-1")
    plan = build_plan(project, hosts, image_refs(project, "t"), NEW, "t")
    return project, plan.hosts[0]


def ship(project: Any, hp: HostPlan, answers: dict[str, list[Any]],
         reporter: StepHook | None = None,
         cancel: threading.Event | None = None,
         abort: threading.Event | None = None) -> tuple[list[str], HostReport]:
    table = {"probe host facts": [(0, FACTS)], "take the deploy lock": [(0, "current=\n")],
             "check container health": [(0, HEALTHY)], **answers}
    ex = ScriptedExecutor("web-1", Answers(table))
    settings = ShipSettings("me@here", "2026-12-01T00:00:00Z", health_timeout=5,
                            keep_releases=5, poll_interval=0.0,
                            cancel=cancel or threading.Event(),
                            abort=abort or threading.Event())
    rep = run_host(hp.host, ex,
                   lambda e, run, host: HostShip(project, hp, e, run, settings).ship(),
                   reporter or StepHook())
    names = [c.name for c in ex.calls if isinstance(c, Call)]
    return names, rep


@pytest.mark.parametrize("index", range(len(cases("x"))), ids=lambda i: cases("x")[i].id)
def test_case(hp: tuple[Any, HostPlan], index: int) -> None:
    project, plan = hp
    case = cases(plan.fingerprint)[index]
    names, rep = ship(project, plan, case.answers)
    assert names == case.commands
    assert (rep.result, rep.release) == (case.result, case.release), rep
    if case.error is None:
        assert rep.error is None
    else:
        assert case.error in (rep.error or "")
    assert rep.rolled_back_from == case.rolled_back_from
    assert rep.commands == sum(1 for n in names if not n.startswith("upload "))


def test_failed_first_release_has_no_release_in_the_json_report(
        hp: tuple[Any, HostPlan]) -> None:
    project, plan = hp
    case = next(c for c in cases(plan.fingerprint) if c.id == "failed first release")
    _, rep = ship(project, plan, case.answers)
    host = RunReport("ship", "shop", "prod", NEW, {}, [rep]).to_json()["hosts"][0]
    assert "release" not in host


# -- an interrupt at each step ---------------------------------------------

# The step Ctrl-C arrives in -> what the host ends as. Ship checks for an
# interrupt before the lock, the upload and compose up; after compose up it
# completes (or rolls back) whatever happens.
INTERRUPTS = {
    "read current release": "before lock",
    "check docker": "before lock",
    "check deploy dir owner": "before lock",
    "prepare deploy dir": "before lock",
    "lock": "before upload",
    "claim deploy dir": "before upload",
    "clean up stale uploads": "before upload",
    "check free space": "before upload",
    "upload release": "before compose up",
    "create shared dirs": "before compose up",
    "registry login": "before compose up",
    "pull images": "before compose up",
    f"mark {NEW} as being applied": "deployed",
    "compose up": "deployed",
    "wait healthy": "deployed",
    "switch current": "deployed",
    "prune releases": "deployed",
    "prune images": "deployed",
    "remove registry credentials": "deployed",
    "unlock": "deployed",
}


# The commands a host stopped at each check point has seen.
STOPPED = {
    "before lock": BEFORE_LOCK + UNOWNED + PREPARE,
    "before upload": BEFORE_LOCK + UNOWNED + PREPARE + CLAIM + LOCKED[1:4]
    + ["release the deploy lock"],
    "before compose up": BEFORE_LOCK + UNOWNED + PREPARE + CLAIM
    + LOCKED[1:LOCKED.index("compose pull") + 1] + CLEANUP,
}


def test_the_interrupt_table_covers_every_step(hp: tuple[Any, HostPlan]) -> None:
    project, plan = hp
    reporter = StepHook()
    ship(project, plan, {"read current release": [(0, state(None))]}, reporter)
    assert reporter.steps == list(INTERRUPTS)


@pytest.mark.parametrize("step", list(INTERRUPTS))
def test_interrupt_at_each_step(hp: tuple[Any, HostPlan], step: str) -> None:
    project, plan = hp
    cancel = threading.Event()
    reporter = StepHook(lambda s: cancel.set() if s == step else None)
    names, rep = ship(project, plan, {"read current release": [(0, state(None))]},
                      reporter, cancel)
    expected = INTERRUPTS[step]
    if expected == "deployed":
        assert (rep.result, rep.release) == ("deployed", NEW)
        assert names == FIRST
        return
    assert rep.result == "skipped"
    assert rep.release is None
    assert rep.detail == f"interrupted {expected}; nothing changed"
    assert names == STOPPED[expected]
    # Whatever was taken is given back: the lock, and the credentials.
    assert ("take the deploy lock" in names) == ("release the deploy lock" in names)
    assert (names.count("docker login registry.example.com:5000")
            == names.count("remove the run's registry credentials"))


def test_a_host_lost_at_the_apply_marker_is_reported_there_and_nothing_starts(
        hp: tuple[Any, HostPlan]) -> None:
    """The marker is its own step: a connection lost writing it names that
    step (CI once saw it reported under ``compose up``), compose never runs,
    and the lock is still given back."""
    project, plan = hp
    lost = UnreachableError("web-1", f"connection lost during mark {NEW} as being applied")
    names, rep = ship(project, plan, {"read current release": [(0, state(OLD))],
                                      "take the deploy lock": [(0, f"current={OLD}\n")],
                                      f"mark {NEW} as being applied": [lost]})
    assert rep.result == "failed", rep
    assert rep.error is not None and rep.error.startswith(f"mark {NEW} as being applied: "), rep
    assert "compose up" not in names
    assert names[-1] == "release the deploy lock", names
