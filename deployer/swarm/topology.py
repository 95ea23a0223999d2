"""Which hosts of the inventory manage the swarm, and what ``check``
refuses with ``target: swarm``."""

from __future__ import annotations

from dataclasses import dataclass

from deployer.config import Host, Project
from deployer.errors import ConfigError


@dataclass(frozen=True)
class Topology:
    """``managers`` in inventory order (the first one runs the stack deploy,
    holds the lock and the releases); ``workers``: every other host."""

    managers: tuple[Host, ...]
    workers: tuple[Host, ...]

    @property
    def first(self) -> Host:
        return self.managers[0]

    @property
    def nodes(self) -> tuple[Host, ...]:
        return self.managers + self.workers


def is_swarm(project: Project) -> bool:
    return project.inventory.target == "swarm"


def topology(project: Project) -> Topology:
    """The managers ``swarm.managers`` names (hosts or groups; default the
    first host), then the workers. An unknown name is a config error."""
    hosts = project.hosts
    names = project.inventory.swarm.managers if project.inventory.swarm else None
    if not names:
        return Topology((hosts[0],), tuple(hosts[1:]))
    chosen: set[str] = set()
    for i, name in enumerate(names):
        found = [h for h in hosts if h.name == name or name in h.groups]
        if not found:
            where = project.inventory_map.where(("swarm", "managers", i))
            raise ConfigError(
                f"{where}: swarm.managers: {name!r} is neither a host nor a group",
                f"hosts here: {', '.join(h.name for h in hosts)}",
            )
        chosen.update(h.name for h in found)
    managers = tuple(h for h in hosts if h.name in chosen)
    return Topology(managers, tuple(h for h in hosts if h.name not in chosen))


def check(project: Project) -> Topology:
    """The rules of ``target: swarm`` that the models cannot see: one stack
    serves every node, so no host may have vars of its own (the files are
    rendered once, in the first manager's context)."""
    inv = project.inventory
    where = project.inventory_map.where
    for gname, g in inv.groups.items():
        for hname, hc in g.hosts.items():
            if hc is not None and hc.vars:
                _host_vars(where(("groups", gname, "hosts", hname, "vars")), hname)
    for hname, hc in inv.hosts.items():
        if hc is not None and hc.vars:
            _host_vars(where(("hosts", hname, "vars")), hname)
    for gname, g in inv.groups.items():
        if g.services is not None or g.files is not None:
            key = "services" if g.services is not None else "files"
            raise ConfigError(
                f"{where(('groups', gname, key))}: groups.{gname}.{key} does not apply to "
                "target: swarm: one stack serves every node",
                "place services on nodes with deploy.placement.constraints in the compose file",
            )
    _unsupported(project)
    return topology(project)


def _unsupported(project: Project) -> None:
    """What a swarm ship does not do (yet), refused rather than ignored."""
    where = project.config_map.where
    if project.registry.none:
        raise ConfigError(
            f"{where(('registry',))}: registry: none does not work with target: swarm: every "
            "node pulls the stack's images from a registry",
            "set registry.server (the sandbox has one), or use target: compose",
        )
    for name in ("pre_up", "post_up"):
        if getattr(project.config.hooks, name) is not None:
            raise ConfigError(
                f"{where(('hooks', name))}: hooks.{name} runs on each host around compose up, "
                "which target: swarm does not do",
                "use the local hooks pre_deploy/post_deploy, or a one-shot service",
            )


def _host_vars(where: str, host: str) -> None:
    raise ConfigError(
        f"{where}: host {host!r} has vars of its own; with target: swarm the files are "
        "rendered once for the whole cluster (one stack serves every node)",
        "move them to the inventory's or a group's vars, or use target: compose",
    )
