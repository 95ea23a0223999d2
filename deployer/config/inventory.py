"""Hosts as the rest of deployer sees them: inventory, group and host settings
merged, and ``--limit`` matching."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from typing import Any

from deployer.config.models import FileSpec, InventoryConfig, SSHConfig
from deployer.errors import ConfigError


@dataclass(frozen=True)
class SSHSettings:
    """Fully resolved SSH settings for one host (None: take ~/.ssh/config or
    OpenSSH's default)."""

    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    known_hosts: str = "~/.ssh/known_hosts"
    host_key_policy: str = "strict"
    proxy_jump: str | None = None
    connect_timeout: float = 10.0
    command_timeout: float | None = None  # None: the step decides

    @property
    def known_hosts_path(self) -> str:
        return os.path.expanduser(self.known_hosts)

    @property
    def identity_path(self) -> str | None:
        return os.path.expanduser(self.identity_file) if self.identity_file else None


@dataclass(frozen=True)
class Host:
    """One server of the inventory, with everything merged."""

    name: str
    address: str
    groups: tuple[str, ...]
    ssh: SSHSettings
    vars: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    services: tuple[str, ...] | None = None  # None: every service of the compose file
    files: tuple[FileSpec, ...] | None = None  # None: the project's files
    docker_install: str = "docker-ce"

    def template_info(self) -> dict[str, Any]:
        return {"name": self.name, "address": self.address, "groups": list(self.groups)}


def _settings(ssh: SSHConfig) -> SSHSettings:
    data = {k: v for k, v in ssh.model_dump().items() if v is not None}
    return SSHSettings(**data)


def resolve_hosts(inv: InventoryConfig, where: str) -> list[Host]:
    """Merge vars and settings: inventory < group (file order) < host.

    A host belongs to exactly one group (or to none, under top-level ``hosts``);
    defining it twice is an error, since which definition wins would be a guess.
    """
    seen: dict[str, str] = {}
    hosts: list[Host] = []

    def add(name: str, hc: Any, group: str | None) -> None:
        place = f"group {group!r}" if group else "top-level hosts"
        if name in seen:
            raise ConfigError(
                f"{where}: host {name!r} is defined twice ({seen[name]} and {place})",
                "give each host one entry; put shared settings in group vars",
            )
        seen[name] = place
        g = inv.groups[group] if group else None
        ssh = inv.ssh
        if g is not None:
            ssh = ssh.merged(g.ssh)
        merged_vars: dict[str, Any] = dict(inv.vars)
        if g is not None:
            merged_vars.update(g.vars)
        address = name
        if hc is not None:
            ssh = ssh.merged(hc.ssh)
            merged_vars.update(hc.vars)
            address = hc.address or name
        hosts.append(
            Host(
                name=name,
                address=address,
                groups=(group,) if group else (),
                ssh=_settings(ssh),
                vars=merged_vars,
                services=tuple(g.services) if g is not None and g.services is not None else None,
                files=tuple(g.files) if g is not None and g.files is not None else None,
                docker_install=inv.docker.install,
            )
        )

    for gname, g in inv.groups.items():
        for hname, hc in g.hosts.items():
            add(hname, hc, gname)
    for hname, hc in inv.hosts.items():
        add(hname, hc, None)
    return hosts


def match_limit(hosts: list[Host], limit: str | None, where: str = "--limit") -> list[Host]:
    """Hosts matching a comma-separated list of host names, group names and
    globs (``web-*``). A pattern that matches nothing is an error: a typo in
    ``--limit`` must never silently deploy nowhere (or everywhere)."""
    if not limit:
        return list(hosts)
    patterns = [p.strip() for p in limit.split(",") if p.strip()]
    if not patterns:
        raise ConfigError(f"{where}: empty pattern", "pass host names, group names or globs")
    chosen: set[str] = set()
    for p in patterns:
        hit = [
            h.name
            for h in hosts
            if fnmatch.fnmatchcase(h.name, p) or any(fnmatch.fnmatchcase(g, p) for g in h.groups)
        ]
        if not hit:
            known = {h.name for h in hosts} | {g for h in hosts for g in h.groups}
            names = ", ".join(sorted(known))
            raise ConfigError(
                f"{where}: {p!r} matches no host or group",
                f"known hosts and groups: {names}",
            )
        chosen.update(hit)
    return [h for h in hosts if h.name in chosen]
