"""The proxy's part of ``plan --diff``: which proxy steps a ship would run on
a host and how the app's routes there would change.

Nothing here writes a second copy of ship's steps: the host's proxy is read
once (read-only, :func:`deployer.commands.proxy_ops.look`), and ship's own
state machine runs against the scripted host of ``plan``
(:func:`deployer.deploy.dryrun.dry_run_host`) with the proxy answering as the
real one did. The proxy steps it enters are the ones listed (``start the
proxy`` only when it is missing), and the config it would load (the stdin of
its last ``write the proxy config``) is compared with the host's: each of the
app's routes ``added``, ``removed``, ``changed`` (what) or ``unchanged``.
The routes' upstreams are the new containers in any case, so only their
ports count.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from deployer.commands import proxy as pc
from deployer.commands import proxy_ops as ops
from deployer.proxy.caddy import owned_by

if TYPE_CHECKING:
    from deployer.audit import AuditContext
    from deployer.config import Project
    from deployer.deploy.ship import ShipSettings
    from deployer.plan import HostPlan
    from deployer.remote.base import Executor

#: The steps of ship that concern the proxy (the rest is plain plan output).
STEPS = ("read proxy state", "pull the proxy image", "write the proxy config",
         "start the proxy", "proxy health check", "switch the proxy",
         "drain old containers", "remove the old containers")


@dataclass
class ProxyDiff:
    container: str  # running | stopped | absent
    image: str
    configured: str
    maintenance: bool
    steps: list[str] = field(default_factory=list)
    routes: list[dict[str, str]] = field(default_factory=list)

    def data(self) -> dict[str, Any]:
        return {"container": self.container, "image": self.image,
                "configured": self.configured,
                "up_to_date": ops.same_image(self.image, self.configured) if self.image
                else None, "maintenance": self.maintenance, "steps": list(self.steps),
                "routes": list(self.routes)}


def _shape(route: dict[str, Any]) -> dict[str, Any]:
    """A route without its upstreams' container names (ports kept)."""
    out = json.loads(json.dumps(route))
    for h in out.get("handle") or []:
        if h.get("handler") == "reverse_proxy":
            h["upstreams"] = sorted({str(u.get("dial", "")).rpartition(":")[2]
                                     for u in h.get("upstreams") or []})
    return out


def _what(old: dict[str, Any], new: dict[str, Any]) -> str:
    from deployer.proxy.ops import describe_match

    def handler(r: dict[str, Any]) -> dict[str, Any]:
        return next(iter(r.get("handle") or [{}]))

    parts = []
    if describe_match(old) != describe_match(new):
        parts.append(f"match: {describe_match(old)} -> {describe_match(new)}")
    ho, hn = handler(old), handler(new)
    kind = {"reverse_proxy": "the app", "static_response": "the maintenance page"}
    if ho.get("handler") != hn.get("handler"):
        parts.append(f"serves {kind.get(ho.get('handler', ''), '?')} -> "
                     f"{kind.get(hn.get('handler', ''), '?')}")
    elif ho.get("upstreams") != hn.get("upstreams"):
        parts.append(f"port {','.join(ho.get('upstreams') or [])} -> "
                     f"{','.join(hn.get('upstreams') or [])}")
    if ho.get("health_checks") != hn.get("health_checks") and ho.get("handler") == hn.get(
            "handler"):
        parts.append("health check")
    rest = [k for k in {*ho, *hn} - {"handler", "upstreams", "health_checks"}
            if ho.get(k) != hn.get(k)] if ho.get("handler") == hn.get("handler") else []
    if rest or (not parts and _shape(old) != _shape(new)):
        parts.append("proxy settings (" + ", ".join(sorted(rest) or ["route"]) + ")")
    return "; ".join(parts)


def route_changes(host_cfg: dict[str, Any] | None, planned: dict[str, Any] | None,
                  app: str) -> list[dict[str, str]]:
    """``app``'s routes: the host's config against the one ship would load."""
    have = {str(r.get("@id")): _shape(r) for r in ops.config_routes(host_cfg)
            if owned_by(r, app)}
    want = {str(r.get("@id")): _shape(r) for r in ops.config_routes(planned)
            if owned_by(r, app)}
    out = []
    for rid in sorted({*have, *want}):
        if rid not in have:
            out.append({"id": rid, "status": "added", "what": _describe(want[rid])})
        elif rid not in want:
            out.append({"id": rid, "status": "removed", "what": _describe(have[rid])})
        elif have[rid] != want[rid]:
            out.append({"id": rid, "status": "changed", "what": _what(have[rid], want[rid])})
        else:
            out.append({"id": rid, "status": "unchanged", "what": ""})
    return out


def _describe(route: dict[str, Any]) -> str:
    from deployer.proxy.ops import describe_match

    return describe_match(route)


def host_proxy_diff(ex: Executor, project: Project, hp: HostPlan, settings: ShipSettings,
                    audit: AuditContext | None = None) -> ProxyDiff | None:
    """Read ``hp``'s host's proxy and dry-run ship's proxy steps against it;
    None when the host runs no proxied service."""
    from deployer.deploy.dryrun import dry_run_host
    from deployer.proxy.switch import host_proxy

    proxied = host_proxy(project.config.proxy if hp.proxy else None, hp.compose.services,
                         hp.images)
    if proxied is None:
        return None
    res = ex.run(ops.look(project.deploy_dir))
    state_text, maintenance_text = ops.split_look(res.stdout)
    state = pc.parse_state(state_text)
    dry = dry_run_host(project, hp, settings, audit, answers={
        pc.read_state(sudo=False).description: state_text,
        ops.read_maintenance(project.deploy_dir).description: maintenance_text,
    })
    steps = [s.name for s in dry.steps if s.name in STEPS or s.name.startswith("start new ")]
    planned: dict[str, Any] | None = None
    for s in dry.steps:
        for c in s.calls:
            if c.command is not None and c.command.description == "write the proxy config":
                try:
                    planned = json.loads(str(c.command.stdin))
                except ValueError:
                    planned = None
    container = {True: "running", False: "stopped", None: "absent"}[state.running]
    return ProxyDiff(container, state.image, proxied.image, bool(maintenance_text.strip()),
                     steps, route_changes(state.config, planned, project.project_name))
