"""Forming the swarm: ``swarm init`` on the first manager (at the address
deployer reaches it at), the other nodes joined with tokens read over SSH.

Every node is probed before anything changes: an existing swarm is used as
it is, and a node that belongs to another swarm is refused, by name, with
nothing changed on any host. A join token is read into memory, registered
with the masker and sent on the joining node's stdin; it is never printed.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from deployer.config import Host
from deployer.deploy.hostrun import HostRun
from deployer.errors import HostError
from deployer.remote.base import Executor
from deployer.secrets import masker
from deployer.swarm import commands
from deployer.swarm.topology import Topology


@dataclass(frozen=True)
class NodeState:
    state: str  # inactive, pending, active, error, locked
    node_id: str = ""
    control: bool = False  # a manager
    managers: tuple[str, ...] = ()  # addresses of the swarm's managers it knows


def parse_info(stdout: str) -> NodeState:
    try:
        data = json.loads(stdout.strip() or "{}")
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    remotes = data.get("RemoteManagers") or []
    return NodeState(
        state=str(data.get("LocalNodeState", "") or "inactive"),
        node_id=str(data.get("NodeID", "")),
        control=bool(data.get("ControlAvailable")),
        managers=tuple(str(r.get("Addr", "")) for r in remotes if isinstance(r, dict)),
    )


@dataclass
class Node:
    host: Host
    ex: Executor
    sudo: bool
    state: NodeState


def _probe(host: Host, ex: Executor, run: HostRun,
           on_bootstrap: Callable[[str], None] | None) -> Node:
    from deployer.deploy.bootstrap import bootstrap_host

    out = bootstrap_host(ex, host)
    if on_bootstrap is not None:
        on_bootstrap(f"{host.name}: {out.detail}")
    elif out.changed:
        run.log(f"{host.name}: bootstrapped: {out.detail}")
    sudo = out.facts.docker_sudo
    return Node(host, ex, sudo, parse_info(ex.run(commands.swarm_info(sudo=sudo)).stdout))


def ensure_cluster(topo: Topology, first_ex: Executor, first_sudo: bool, run: HostRun,
                   open_executor: Callable[[Host], Executor],
                   on_bootstrap: Callable[[str], None] | None = None) -> list[str]:
    """Make every node of ``topo`` a member of one swarm; returns what it did
    (``["swarm init on mgr-1", "web-2 joined as worker"]``). Raises
    :class:`HostError` for a node in another swarm, before any change.
    Every other node is bootstrapped first (Docker installed where missing);
    ``on_bootstrap`` is told each one's outcome (default: only changes are
    logged)."""
    first = topo.first
    done: list[str] = []
    opened: list[Executor] = []
    try:
        with run.step("probe swarm nodes"):
            head = Node(first, first_ex, first_sudo,
                        parse_info(first_ex.run(commands.swarm_info(sudo=first_sudo)).stdout))
            others: list[Node] = []
            for h in topo.nodes[1:]:
                ex = open_executor(h)
                opened.append(ex)
                others.append(_probe(h, ex, run, on_bootstrap))
            members: set[str] = set()
            if head.state.state == "active":
                if not head.state.control:
                    raise HostError(first.name, "swarm", f"{first.name} is a worker of a swarm, "
                                    "but it is the first manager of this inventory",
                                    "list the swarm's manager first in swarm.managers")
                members = _node_ids(head)
            elif head.state.state != "inactive":
                raise HostError(first.name, "swarm",
                                f"its swarm state is {head.state.state!r}",
                                "fix or leave that swarm (docker swarm leave) first")
            for n in others:
                if n.state.state == "inactive":
                    continue
                if n.state.state != "active" or n.state.node_id not in members:
                    raise HostError(
                        n.host.name, "swarm",
                        f"{n.host.name} belongs to another swarm (node {n.state.node_id or '?'}, "
                        f"state {n.state.state}, managers "
                        f"{', '.join(n.state.managers) or 'unknown'}); nothing was changed",
                        f"run `docker swarm leave` on {n.host.name}, or take it out of the "
                        "inventory",
                    )
        if head.state.state == "inactive":
            with run.step("swarm init"):
                first_ex.run(commands.swarm_init(first.address, sudo=first_sudo))
            done.append(f"swarm init on {first.name}")
        joining = [n for n in others if n.state.state == "inactive"]
        if joining:
            manager_names = {h.name for h in topo.managers}
            tokens: dict[str, str] = {}
            with run.step("join swarm nodes"):
                for n in joining:
                    role = "manager" if n.host.name in manager_names else "worker"
                    if role not in tokens:
                        res = first_ex.run(commands.join_token(role, sudo=first_sudo))
                        tokens[role] = res.stdout.strip()
                        masker.add(tokens[role])
                    n.ex.run(commands.swarm_join(f"{first.address}:{commands.SWARM_PORT}",
                                                 tokens[role], sudo=n.sudo), timeout=120)
                    done.append(f"{n.host.name} joined as {role}")
        return done
    finally:
        for ex in opened:
            with contextlib.suppress(Exception):
                ex.close()


def _node_ids(head: Node) -> set[str]:
    res = head.ex.run(commands.node_ids(sudo=head.sudo))
    return {line.split()[0] for line in res.stdout.splitlines() if line.strip()}
