"""``plan``'s steps: ship's own state machine run against a scripted host.

:class:`~deployer.deploy.ship.HostShip` runs unchanged against a
:class:`~deployer.remote.recording.ScriptedExecutor` that answers with the
facts of one assumed host (:data:`ASSUMING`), and every step it enters and
every command it sends are recorded in order. So plan lists exactly what
ship runs on such a host, in ship's order, ``prepare`` (sudo), the lock and
the clean-up included; on a host with other facts ship takes another branch
(installs Docker, uses compose v1 or sudo for docker, skips ``prepare``),
and plan says which branch it shows.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field

from deployer.audit import AuditContext, audited, context
from deployer.commands.base import Command
from deployer.commands.facts import MARKER
from deployer.commands.release import STATE_MARKER
from deployer.config import Project
from deployer.deploy.hostrun import HostRun
from deployer.deploy.ship import HostShip, ShipSettings
from deployer.plan import HostPlan
from deployer.remote.recording import Call, ScriptedExecutor
from deployer.report.model import HostReport, RunReport

ASSUMING = ("first release (nothing deployed yet), Docker present with compose v2, "
            "SSH user not root (sudo -n where needed) and in the docker group")

# The assumed host, as the facts probe would print it.
PLAN_FACTS = {
    "os_id": "debian", "os_version_id": "12", "os_codename": "bookworm",
    "user": "deploy", "uid": "1000", "gid": "1000", "sudo": "1", "arch": "amd64",
    "docker_group": "docker:x:999:deploy", "systemd": "1", "docker_service": "active",
    "docker_socket": "1", "docker": "1", "docker_reachable": "1",
    "docker_server_version": "27", "compose": "v2", "compose_version": "2",
}
EMPTY_STATE = f"{STATE_MARKER}\nexists=0\nwritable=0\ncurrent=\n"


@dataclass
class PlanStep:
    name: str
    calls: list[Call] = field(default_factory=list)

    def commands(self) -> list[str]:
        return [c.display() for c in self.calls]


@dataclass
class HostDryRun:
    steps: list[PlanStep]
    report: HostReport


class StepLog:
    """A reporter that only notes which step starts, into the shared list."""

    def __init__(self, events: list[object]) -> None:
        self.events = events

    def start(self, hosts: list[str], batches: list[int]) -> None: ...

    def batch(self, no: int, hosts: list[str]) -> None: ...

    def step(self, host: str, step: str) -> None:
        self.events.append(step)

    def log(self, host: str, line: str) -> None: ...

    def host_done(self, report: HostReport) -> None: ...

    def finish(self, run: RunReport) -> None: ...


def healthy_rows(app: str, services: list[str], oneshot: list[str]) -> str:
    """The health probe's answer when every service is up (one-shots done)."""
    rows = []
    for s in services:
        done = s in oneshot
        rows.append(json.dumps({
            "name": f"/{app}-{s}-1", "service": s, "oneoff": "False", "image": "",
            "restart_policy": "no" if done else "unless-stopped", "restart_count": 0,
            "state": {"Status": "exited" if done else "running", "ExitCode": 0},
        }))
    return "\n".join(rows) + "\n"


class ScriptedAnswer:
    """The assumed host's answers to ship's commands."""

    def __init__(self, project: Project, hp: HostPlan) -> None:
        user = hp.host.ssh.user or "<ssh user>"  # the inventory's, when it names one
        facts = {**PLAN_FACTS, "user": user, "docker_group": f"docker:x:999:{user}"}
        self.by_description = {
            "probe host facts": MARKER + "\n" + "".join(f"{k}={v}\n" for k, v in facts.items()),
            "read current release": EMPTY_STATE,
            "take the deploy lock": "current=\n",
            "check container health": healthy_rows(project.project_name, hp.compose.services,
                                                   hp.compose.oneshot or []),
        }

    def __call__(self, command: Command) -> tuple[int, str]:
        return 0, self.by_description.get(command.description, "")


def dry_run_host(project: Project, hp: HostPlan, settings: ShipSettings,
                 audit: AuditContext | None = None,
                 answers: dict[str, str] | None = None) -> HostDryRun:
    """Ship ``hp`` to the assumed host; the steps and commands it ran.
    ``audit``: the run's (default: made for this host). ``answers``: more
    outputs by command description (``plan --diff``: what the host said)."""
    events: list[object] = []
    script = ScriptedAnswer(project, hp)
    script.by_description.update(answers or {})
    ex = ScriptedExecutor(hp.host.name, script, calls=events)
    run = HostRun(hp.host.name, StepLog(events))
    ship = HostShip(project, hp, ex, run, settings)
    # ship's audit line too, so plan lists every command ship sends
    report = audited("ship", audit or context(project),
                     lambda _e, _r, _h: ship.ship())(ex, run, hp.host)
    return HostDryRun(recorded_steps(events), report)


def recorded_steps(events: list[object]) -> list[PlanStep]:
    """The steps a :class:`StepLog` and an executor recorded into
    ``events``, each with its calls in order (steps without any left out)."""
    steps: list[PlanStep] = []
    for ev in events:
        if isinstance(ev, str):
            steps.append(PlanStep(ev))
        elif isinstance(ev, Call):
            if not steps:
                steps.append(PlanStep("connect"))
            steps[-1].calls.append(ev)
    return [s for s in steps if s.calls]


def plan_settings(project: Project, who: str, when: str) -> ShipSettings:
    """Ship's settings for a dry run: nothing waits (the assumed host is
    healthy at the first poll) and nothing can interrupt it."""
    return ShipSettings(who=who, when=when, health_timeout=project.config.health_timeout,
                        keep_releases=project.config.keep_releases, poll_interval=0.0,
                        cancel=threading.Event())
