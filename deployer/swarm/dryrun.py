"""``plan`` with ``target: swarm``: the swarm ship itself
(:class:`~deployer.swarm.ship.SwarmShip`), run against scripted nodes.

Like :mod:`deployer.deploy.dryrun` for compose: ship's own code runs
unchanged, every step it enters and every command it sends are recorded in
order, so plan lists exactly what ship runs on a cluster as
:data:`ASSUMING` says, the swarm forming on every node included. A command
sent to another node than the first manager is shown with that node's name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from deployer.audit import AuditContext, audited
from deployer.commands.base import Command
from deployer.config import Host, Project
from deployer.deploy.dryrun import HostDryRun, ScriptedAnswer, StepLog, recorded_steps
from deployer.deploy.hostrun import HostRun
from deployer.deploy.ship import ShipSettings
from deployer.plan import Plan, image_refs
from deployer.remote.recording import Call, ScriptedExecutor
from deployer.swarm import commands
from deployer.swarm.ship import SwarmShip, stack_plan, whole_cluster
from deployer.swarm.stack import Stack

if TYPE_CHECKING:
    from deployer.deploy.api import Stamp

ASSUMING = ("first release (nothing deployed yet), Docker present on every node and in no "
            "swarm (so: swarm init on the first manager, the others join), SSH user not "
            "root and in the docker group")


@dataclass(frozen=True)
class NodeCall(Call):
    """A call to another node than the first manager."""

    node: str = ""

    def display(self) -> str:
        return f"on {self.node}: {super().display()}"


class _Node(ScriptedExecutor):
    """A scripted node whose calls go into the first manager's record,
    marked with its name."""

    def _note(self, call: Call) -> None:
        self.calls.append(NodeCall(call.kind, call.command, call.path, call.mode, call.size,
                                   node=self.host))


def healthy_probe(app: str, stack: Stack, node: str) -> str:
    """:func:`commands.services_probe`'s answer when every service of
    ``stack`` runs one healthy task."""
    inspect = [{"Spec": {"Name": f"{app}_{s}", "Mode": {"Replicated": {"Replicas": 1}},
                         "TaskTemplate": {"ContainerSpec": {"Image": ""}}}}
               for s in stack.services]
    tasks = [json.dumps({"Name": f"{app}_{s}.1", "Node": node, "DesiredState": "Running",
                         "CurrentState": "Running 1 second ago", "Error": ""})
             for s in stack.services]
    return json.dumps(inspect) + f"\n{commands.PROBE_MARK}\n" + "\n".join(tasks) + "\n"


class SwarmAnswer:
    """The assumed cluster's answers (see :data:`ASSUMING`)."""

    def __init__(self, base: ScriptedAnswer, app: str, stack: Stack, node: str) -> None:
        self.base = base
        done = json.dumps({"CurrentState": "Complete 1 second ago", "DesiredState": "Complete"})
        self.by_description = {
            commands.swarm_info().description: json.dumps({"LocalNodeState": "inactive"}),
            commands.services_probe(app).description: healthy_probe(app, stack, node),
            commands.join_token("worker").description: "<worker join token>",
            commands.join_token("manager").description: "<manager join token>",
        }
        self.done = done

    def __call__(self, command: Command) -> tuple[int, str]:
        if command.description in self.by_description:
            return 0, self.by_description[command.description]
        if command.description.startswith("read the tasks of "):
            return 0, self.done + "\n"
        return self.base(command)


def dry_run_stack(project: Project, hosts: list[Host], release: str, tag: str,
                  settings: ShipSettings, audit: AuditContext
                  ) -> tuple[Plan, HostDryRun, Stack]:
    """The swarm ship of the cluster, against :data:`ASSUMING`: the plan
    (one release, the first manager's), its steps, and the stack."""
    topo = whole_cluster(project, hosts, "plan")
    images = image_refs(project, tag)
    hp, stack = stack_plan(project, topo.first, images, release, tag)
    answer = SwarmAnswer(ScriptedAnswer(project, hp), project.app, stack, topo.first.name)
    events: list[object] = []
    ex = ScriptedExecutor(topo.first.name, answer, calls=events)
    run = HostRun(topo.first.name, StepLog(events))

    def node(h: Host) -> _Node:
        return _Node(h.name, answer, calls=events)

    ship = SwarmShip(project, topo, hp, stack, ex, run, settings, node)
    report = audited("ship", audit, lambda _e, _r, _h: ship.ship())(ex, run, topo.first)
    plan = Plan(project, release, tag, dict(images), [hp])
    return plan, HostDryRun(recorded_steps(events), report), stack


def plan_stack(project: Project, hosts: list[Host], stamp: Stamp
               ) -> tuple[Plan, dict[str, HostDryRun], str, dict[str, Any]]:
    """``plan`` of a swarm: (plan, steps by host, what it assumes, the
    stack as :func:`stack_view` shows it), as :class:`deployer.deploy.api.DryRun`
    takes them."""
    import dataclasses

    from deployer.audit import context
    from deployer.deploy.dryrun import plan_settings

    settings = dataclasses.replace(plan_settings(project, stamp.who, stamp.when),
                                   hosts=tuple(h.name for h in hosts))
    plan, dry, stack = dry_run_stack(project, hosts, stamp.release, stamp.tag, settings,
                                     context(project))
    return plan, {plan.hosts[0].host.name: dry}, ASSUMING, stack_view(stack)


def stack_view(stack: Stack) -> dict[str, Any]:
    """What ``plan`` adds for the stack (its file is among the release
    files): the services, the one-shots that run first, the configs and
    secrets a first release creates, and what the conversion dropped."""
    return {
        "services": list(stack.services),
        "oneshots": [j.service for j in stack.jobs],
        "objects": [{"kind": o.kind, "name": o.name, "file": o.file} for o in stack.objects],
        "notes": list(stack.notes),
    }
