"""Turning the rendered compose file into the one a host runs.

Two rewrites, both pure and shown by ``plan``:
- roles: a host whose group sets ``services:`` keeps only those services
  (``depends_on`` on services that live elsewhere is dropped, since compose
  would refuse a dependency it cannot see);
- data: a relative bind mount whose source is not an uploaded file
  (``./postgres-data:/var/lib/postgresql/data``) points at
  ``<deploy_dir>/shared/<path>``, the same for every release and rollback, so
  a redeploy never starts on an empty data folder.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

import yaml

from deployer.errors import ConfigError
from deployer.release_files import CopySpec


@dataclass
class ServerCompose:
    text: str
    services: list[str]
    shared_dirs: list[str] = field(default_factory=list)  # relative to <deploy_dir>/shared
    healthchecked: list[str] = field(default_factory=list)
    oneshot: list[str] = field(default_factory=list)
    copies: list[CopySpec] = field(default_factory=list)  # config paths shipped in the release


# Every host's rendered compose file is parsed on every ship, no-op included:
# libyaml's parser (same safe constructor, same data) is about ten times
# faster than PyYAML's pure-Python one. Only parsing: what is written back
# (and fingerprinted) always comes from the pure-Python dumper, so two
# machines with and without libyaml upload the same bytes.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _is_relative_source(src: str) -> bool:
    return src.startswith(("./", "../")) or src in {".", ".."}


def server_compose(
    text: str,
    *,
    where: str,
    deploy_dir: str,
    uploaded: list[str],
    services: tuple[str, ...] | None,
) -> ServerCompose:
    """Rewrite the rendered compose ``text`` for one host (see module doc)."""
    try:
        doc = yaml.load(text, Loader=_LOADER)  # noqa: S506 (_LOADER is a safe loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f":{mark.line + 1}" if mark else ""
        raise ConfigError(
            f"{where}{at}: the rendered compose file is not valid YAML: "
            f"{getattr(e, 'problem', e)}",
            "check the template's output with `deployer plan`",
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
        raise ConfigError(f"{where}: the compose file has no 'services' mapping")
    all_services: dict[str, Any] = doc["services"]
    if services is not None:
        unknown = [s for s in services if s not in all_services]
        if unknown:
            raise ConfigError(
                f"{where}: services {', '.join(unknown)} (from the inventory's group "
                "'services') are not in the compose file",
                f"services in the compose file: {', '.join(all_services)}",
            )
        doc["services"] = {k: v for k, v in all_services.items() if k in services}
        for svc in doc["services"].values():
            _drop_foreign_deps(svc, set(services))
    shared: list[str] = []
    up = {posixpath.normpath(u) for u in uploaded}
    for name, svc in doc["services"].items():
        if not isinstance(svc, dict):
            raise ConfigError(f"{where}: service {name!r} must be a mapping")
        vols = svc.get("volumes")
        if isinstance(vols, list):
            svc["volumes"] = [
                _rewrite_volume(v, where, name, deploy_dir, up, shared) for v in vols
            ]
    svcs = doc["services"]
    changed = services is not None or bool(shared)
    # Untouched files keep the user's layout and comments.
    out = (
        yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=1000)
        if changed
        else text
    )
    return ServerCompose(
        text=out,
        services=list(svcs),
        shared_dirs=sorted(set(shared)),
        healthchecked=[
            n for n, s in svcs.items()
            if isinstance(s.get("healthcheck"), dict) and not s["healthcheck"].get("disable")
        ],
        oneshot=[n for n, s in svcs.items() if _is_oneshot(n, svcs)],
    )


def _is_oneshot(name: str, svcs: dict[str, Any]) -> bool:
    """A service others wait on with ``service_completed_successfully``, or
    one marked ``restart: "no"`` with a label ``deployer.oneshot``."""
    for s in svcs.values():
        deps = s.get("depends_on") if isinstance(s, dict) else None
        if isinstance(deps, dict):
            d = deps.get(name)
            if isinstance(d, dict) and d.get("condition") == "service_completed_successfully":
                return True
    labels = svcs[name].get("labels") if isinstance(svcs[name], dict) else None
    if isinstance(labels, dict) and str(labels.get("deployer.oneshot", "")).lower() == "true":
        return True
    return isinstance(labels, list) and "deployer.oneshot=true" in labels


def _drop_foreign_deps(svc: Any, here: set[str]) -> None:
    if not isinstance(svc, dict) or "depends_on" not in svc:
        return
    deps = svc["depends_on"]
    if isinstance(deps, list):
        kept: Any = [d for d in deps if d in here]
    elif isinstance(deps, dict):
        kept = {k: v for k, v in deps.items() if k in here}
    else:
        return
    if kept:
        svc["depends_on"] = kept
    else:
        del svc["depends_on"]


def _shared_path(src: str, where: str, service: str, deploy_dir: str, shared: list[str]) -> str:
    rel = posixpath.normpath(src)
    if rel == ".." or rel.startswith("../"):
        raise ConfigError(
            f"{where}: service {service}: bind mount source {src!r} escapes the release folder",
            "use a path under ./ (kept in <deploy_dir>/shared) or an absolute host path",
        )
    shared.append(rel)
    return posixpath.join(deploy_dir, "shared", rel) if rel != "." else posixpath.join(
        deploy_dir, "shared"
    )


def _rewrite_volume(
    v: Any, where: str, service: str, deploy_dir: str, uploaded: set[str], shared: list[str]
) -> Any:
    def is_uploaded(src: str) -> bool:
        rel = posixpath.normpath(src)
        return rel in uploaded or any(u.startswith(rel.rstrip("/") + "/") for u in uploaded)

    if isinstance(v, str):
        parts = v.split(":")
        src = parts[0]
        if len(parts) >= 2 and _is_relative_source(src) and not is_uploaded(src):
            parts[0] = _shared_path(src, where, service, deploy_dir, shared)
            return ":".join(parts)
        return v
    if isinstance(v, dict) and v.get("type", "volume") == "bind":
        src = str(v.get("source", ""))
        if _is_relative_source(src) and not is_uploaded(src):
            return {**v, "source": _shared_path(src, where, service, deploy_dir, shared)}
    return v
