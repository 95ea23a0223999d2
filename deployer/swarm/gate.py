"""The health gate of a stack: every service's ``UpdateStatus`` and tasks.

``docker stack deploy`` exits 0 even when swarm then rolls an update back
(docker/cli#6752), so the verdict comes from the services themselves: an
update this deploy started must end ``completed`` (``rollback_completed`` is
a failure: swarm rolled it back), and every service must have its desired
tasks running. Swarm reports a task with a healthcheck ``starting`` until
the check passes, so ``running`` means healthy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from deployer.swarm.commands import PROBE_MARK

PENDING_UPDATE = ("updating", "rollback_started")
#: Task states before the container starts: the node is pulling the image
#: (or waiting for resources), which takes as long as the network does.
BEFORE_START = ("new", "pending", "assigned", "accepted", "preparing", "ready")
#: How long nodes may pull images, like compose pull's timeout in ship.
PULL_ALLOWANCE = 900.0


@dataclass(frozen=True)
class Task:
    node: str
    desired: str  # Running, Shutdown, Complete
    state: str  # "Running 5 seconds ago", "Failed 2 minutes ago", ...
    error: str = ""

    @property
    def running(self) -> bool:
        return self.desired.lower() == "running" and self.state.lower().startswith("running")

    @property
    def before_start(self) -> bool:
        """Desired to run (or complete) and not started yet: pulling."""
        return (self.desired.lower() in ("running", "complete")
                and self.state.split(" ")[0].lower() in BEFORE_START)


def pulling(states: dict[str, ServiceState]) -> bool:
    """Some task of the stack is still before its start (pulling)."""
    return any(t.before_start for s in states.values() for t in s.tasks)


@dataclass(frozen=True)
class ServiceState:
    name: str  # <app>_<service>
    image: str
    global_mode: bool
    replicas: int | None  # None: global
    update_state: str = ""
    update_started: str = ""
    update_message: str = ""
    tasks: tuple[Task, ...] = ()

    @property
    def desired(self) -> int:
        """Replicas, or for a global service the nodes that should run a task
        (a node's replaced task and its successor are one)."""
        if self.replicas is not None:
            return self.replicas
        return len({t.node for t in self.tasks if t.desired.lower() == "running"})

    @property
    def running(self) -> int:
        if self.replicas is not None:
            return sum(1 for t in self.tasks if t.running)
        return len({t.node for t in self.tasks if t.running})

    def errors(self, limit: int = 3) -> list[str]:
        """The latest distinct task errors, newest first."""
        seen: list[str] = []
        for t in self.tasks:
            if t.error and f"{t.node}: {t.error}" not in seen:
                seen.append(f"{t.node}: {t.error}")
        return seen[:limit]


def parse_probe(stdout: str) -> dict[str, ServiceState]:
    """The output of :func:`deployer.swarm.commands.services_probe`."""
    if not stdout.strip():
        return {}
    inspect, _, ps = stdout.partition(PROBE_MARK)
    try:
        data = json.loads(inspect)
    except ValueError:
        return {}
    tasks: dict[str, list[Task]] = {}
    for line in ps.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            t = json.loads(line)
        except ValueError:
            continue
        name = str(t.get("Name", "")).lstrip("\\_ ").rsplit(".", 1)[0]
        tasks.setdefault(name, []).append(Task(
            node=str(t.get("Node", "")), desired=str(t.get("DesiredState", "")),
            state=str(t.get("CurrentState", "")), error=str(t.get("Error", "")).strip('"'),
        ))
    out: dict[str, ServiceState] = {}
    for svc in data if isinstance(data, list) else []:
        spec: dict[str, Any] = svc.get("Spec") or {}
        name = str(spec.get("Name", ""))
        mode = spec.get("Mode") or {}
        replicated = mode.get("Replicated")
        us = svc.get("UpdateStatus") or {}
        image = str(((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {})
                    .get("Image", ""))
        out[name] = ServiceState(
            name=name,
            image=image,
            global_mode="Global" in mode,
            replicas=int(replicated.get("Replicas", 1)) if isinstance(replicated, dict)
            else None,
            update_state=str(us.get("State", "")),
            update_started=str(us.get("StartedAt", "")),
            update_message=str(us.get("Message", "")),
            tasks=tuple(tasks.get(name, ())),
        )
    return out


def baseline(states: dict[str, ServiceState]) -> dict[str, str]:
    """When each service's last update started, before this deploy: an
    ``UpdateStatus`` with the same start is an older deploy's."""
    return {name: s.update_started for name, s in states.items()}


@dataclass
class Verdict:
    status: Literal["healthy", "pending", "failed"]
    service: str = ""
    reason: str = ""
    rolled_back: bool = False  # swarm rolled the failing service back
    pending: list[tuple[str, str]] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return self.status == "healthy"

    def describe(self) -> str:
        return f"{self.service}: {self.reason}" if self.service else self.reason


def evaluate(states: dict[str, ServiceState], app: str, services: list[str],
             before: dict[str, str]) -> Verdict:
    """The stack's verdict now (see the module doc); ``before``: the
    :func:`baseline` taken before the deploy."""
    pending: list[tuple[str, str]] = []
    for svc in services:
        st = states.get(f"{app}_{svc}")
        if st is None:
            pending.append((svc, "not created yet"))
            continue
        ours = bool(st.update_state) and st.update_started != before.get(st.name, "")
        state = st.update_state if ours else ""
        errors = "; ".join(st.errors())
        if state == "rollback_completed":
            why = st.update_message or "update rolled back"
            return Verdict("failed", svc, f"swarm rolled the update back ({why})"
                           + (f"; task errors: {errors}" if errors else ""), rolled_back=True)
        if state in ("paused", "rollback_paused"):
            return Verdict("failed", svc, f"update {state.replace('_', ' ')}: "
                           f"{st.update_message}" + (f"; task errors: {errors}" if errors else ""))
        if state in PENDING_UPDATE:
            pending.append((svc, st.update_message or state))
            continue
        if (st.global_mode and st.desired == 0) or st.running < st.desired:
            pending.append((svc, f"{st.running}/{st.desired} tasks running"
                            + (f" ({errors})" if errors else "")))
    if pending:
        return Verdict("pending", pending[0][0], pending[0][1], pending=pending)
    return Verdict("healthy")
