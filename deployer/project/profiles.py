"""Which services compose starts, and which of them are one-shots.

Profiles (compose-spec): a service without ``profiles:`` is always active; one
with ``profiles:`` only when one of them is enabled (``*`` enables all).
Enabled profiles come from deployer.yaml/the inventory (``profiles:``), else
``COMPOSE_PROFILES`` (the environment, then ``.env``), comma-separated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from deployer.project.yaml12 import is_false


def enabled_profiles(configured: Sequence[str] | None, env: Mapping[str, str]) -> list[str]:
    """deployer's ``profiles:`` if set, else ``COMPOSE_PROFILES``."""
    if configured is not None:
        return list(configured)
    raw = env.get("COMPOSE_PROFILES", "")
    return [p.strip() for p in raw.split(",") if p.strip()]


def active_services(
    svcs: Mapping[str, Any], enabled: Sequence[str], interp: Callable[[str], str]
) -> list[str]:
    """Services compose's ``up`` starts, in file order."""
    on = set(enabled)
    out = []
    for name, spec in svcs.items():
        profs = spec.get("profiles") if isinstance(spec, dict) else None
        if not profs:
            out.append(name)
            continue
        names = {interp(str(p)) for p in profs} if isinstance(profs, list) else set()
        if "*" in on or names & on:
            out.append(name)
    return out


def is_oneshot(name: str, svcs: Mapping[str, Any]) -> bool:
    """A service that must finish (exit 0) before the release is healthy:
    another service waits on it with ``service_completed_successfully``, or
    it is labelled ``deployer.oneshot=true``."""
    for s in svcs.values():
        deps = s.get("depends_on") if isinstance(s, dict) else None
        if isinstance(deps, dict):
            d = deps.get(name)
            if isinstance(d, dict) and d.get("condition") == "service_completed_successfully":
                return True
    spec = svcs[name]
    if not isinstance(spec, dict):
        return False
    labels = spec.get("labels")
    if isinstance(labels, dict) and str(labels.get("deployer.oneshot", "")).lower() == "true":
        return True
    return isinstance(labels, list) and "deployer.oneshot=true" in labels


def may_exit(name: str, svcs: Mapping[str, Any]) -> bool:
    """A service that is done once it exits 0, and fine while it runs: it says
    ``restart: "no"`` (compose's default, but written on purpose) or
    ``deploy.restart_policy.condition: none``. Many servers say ``restart: "no"``
    too, so running is not "still waiting" as for a one-shot."""
    spec = svcs[name]
    if not isinstance(spec, dict):
        return False
    if "restart" in spec and is_false(spec["restart"]):
        return True
    deploy = spec.get("deploy")
    policy = deploy.get("restart_policy") if isinstance(deploy, dict) else None
    return isinstance(policy, dict) and str(policy.get("condition", "")).lower() == "none"
