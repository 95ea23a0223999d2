"""Caddy's JSON config for the edge proxy, as pure functions.

One proxy serves every app on a host, so its config is shared: each app owns
exactly the routes whose ``@id`` starts with ``deployer:<app>:``, and
:func:`merge` replaces only those (another project's routes, and anything
else in the file, are kept as they are). The result is loaded with
``caddy reload``, which Caddy applies atomically and gracefully: requests in
flight on the old config finish on the old upstreams, new ones take the new.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from deployer.config.models import ProxyConfig, RouteConfig

SERVER = "deployer"
ID_PREFIX = "deployer:"
#: Caddy's own floor for the graceful shutdown of an old config's servers;
#: deployer waits for the drain itself (see :mod:`deployer.proxy.switch`).
MIN_GRACE = 10


def route_id(app: str, service: str) -> str:
    return f"{ID_PREFIX}{app}:{service}"


def owned_by(route: Mapping[str, Any], app: str) -> bool:
    return str(route.get("@id", "")).startswith(f"{ID_PREFIX}{app}:")


def _seconds(v: float) -> str:
    return f"{v:g}s"


def _match(route: RouteConfig) -> list[dict[str, Any]]:
    m: dict[str, Any] = {}
    if route.hosts:
        m["host"] = list(route.hosts)
    prefix = (route.path_prefix or "/").rstrip("/")
    if prefix:
        m["path"] = [prefix, f"{prefix}/*"]
    return [m] if m else []


def render_route(app: str, route: RouteConfig, upstreams: Sequence[str]) -> dict[str, Any]:
    """The Caddy route for ``route``, proxying to ``upstreams`` (``name:port``
    dial addresses), with Caddy's active HTTP check on ``health.path``.
    Keep-alive to the upstreams is off, so every request in flight is one
    TCP connection to its container: that is what the drain counts."""
    handler: dict[str, Any] = {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": u} for u in upstreams],
        "load_balancing": {"selection_policy": {"policy": "round_robin"},
                           "try_duration": "2s"},
        "health_checks": {"active": {
            "uri": route.health.path,
            "interval": _seconds(route.health.interval),
            "timeout": _seconds(route.health.timeout),
            "expect_status": 2,
        }},
        "transport": {"protocol": "http", "keep_alive": {"enabled": False}},
    }
    out: dict[str, Any] = {"@id": route_id(app, route.service), "handle": [handler],
                           "terminal": True}
    match = _match(route)
    if match:
        out["match"] = match
    return out


def _specificity(route: Mapping[str, Any]) -> tuple[int, int, str]:
    """Sort key: routes with hosts first, then longer paths, then by id, so
    the merged order never depends on which app shipped last."""
    match = (route.get("match") or [{}])[0]
    paths = match.get("path") or [""]
    return (0 if match.get("host") else 1, -len(str(paths[0])), str(route.get("@id", "")))


def base_config() -> dict[str, Any]:
    """A proxy with no routes yet (every request: 404 from Caddy)."""
    return {"apps": {"http": {"servers": {}}}}


def merge(existing: Mapping[str, Any] | None, app: str, proxy: ProxyConfig,
          routes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The host's config with ``app``'s routes replaced by ``routes`` (from
    :func:`render_route`). Ports come from ``proxy`` (the last app shipped
    sets them; they are the host's, and apps sharing a proxy must agree)."""
    cfg: dict[str, Any] = json.loads(json.dumps(existing)) if existing else base_config()
    http = cfg.setdefault("apps", {}).setdefault("http", {})
    servers = http.setdefault("servers", {})
    server = servers.setdefault(SERVER, {})
    kept = [r for r in server.get("routes", []) if not owned_by(r, app)]
    merged = sorted([*kept, *routes], key=_specificity)
    server["listen"] = [f":{proxy.http_port}"]
    server["routes"] = merged
    # No TLS yet: no automatic HTTPS, so Caddy neither redirects nor asks a CA.
    server["automatic_https"] = {"disable": True}
    http["http_port"] = proxy.http_port
    http["https_port"] = proxy.https_port
    drains = [r.drain_timeout for r in proxy.routes]
    grace = max([MIN_GRACE, *drains]) + 5
    old = str(http.get("grace_period", "0s")).rstrip("s")
    with contextlib.suppress(ValueError):
        grace = max(grace, float(old))
    http["grace_period"] = _seconds(grace)
    return cfg


def dumps(cfg: Mapping[str, Any]) -> str:
    """The config file's bytes: stable, so an unchanged config is unchanged."""
    return json.dumps(cfg, indent=2, sort_keys=True) + "\n"


def upstreams_of(cfg: Mapping[str, Any] | None, app: str) -> dict[str, list[str]]:
    """``{service: [dial, ...]}`` of ``app``'s routes in a host config."""
    out: dict[str, list[str]] = {}
    if not cfg:
        return out
    servers = cfg.get("apps", {}).get("http", {}).get("servers", {})
    for r in [r for s in servers.values() for r in s.get("routes", [])]:  # HTTP and HTTPS
        parts = str(r.get("@id", "")).split(":")
        if not owned_by(r, app) or len(parts) != 3:  # not a service's route (a redirect)
            continue
        service = parts[2]
        dials: list[str] = []
        for h in r.get("handle", []):
            dials += [str(u.get("dial")) for u in h.get("upstreams", [])]
        out[service] = dials
    return out
