"""The compose file a host would run, converted into the stack file a swarm
runs. Pure: text and file facts in, text and facts out.

What changes (each rule is unit-tested by exact output):

- Every ``${VAR}`` is resolved here (``docker stack deploy`` reads no
  ``.env``); a literal ``$`` is written ``$$``.
- Top-level ``configs``/``secrets`` with a ``file:`` get the name
  ``<app>_<key>_<content hash>``: swarm configs are immutable, so a changed
  file is a new config and the services that mount it roll.
- A bind mount of an uploaded file becomes a config mount at the same target
  (a secret when the file is 0600); an uploaded directory becomes one mount
  per file under it.
- A relative bind mount of data is refused: one stack serves every node, and
  a node's directory is not the cluster's. Use a named volume (node-local)
  and a placement constraint.
- Where a service sets no ``deploy.update_config``, deployer injects
  ``parallelism: 1``, ``order: start-first`` (``stop-first`` where the
  service publishes host-mode ports, which two tasks cannot share on a node),
  ``failure_action: rollback``, ``monitor`` at least the healthcheck window
  and ``max_failure_ratio: 0``.
- One-shots (migrations) leave the stack: they run as swarm jobs first
  (:class:`Job`).
- An image pinned by deployer (``server/repo:tag@sha256:...``) is written
  by its digest alone (``server/repo@sha256:...``): the tag follows the
  whole project's content, so with it every service would roll on any
  change, while the digest changes only when the image does. A config-file
  change so rolls only the services that mount it.
- Keys the stack format does not take (``depends_on``: swarm does not order
  services; ``build``, ``pull_policy``, ``profiles``, ...) are dropped, each
  with a note for ``plan``.
"""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from deployer.errors import ConfigError
from deployer.images.refs import split_ref
from deployer.project.interpolate import escape, substitute
from deployer.project.yaml12 import load_fast

#: The stack file inside each release (next to the compose file).
STACK_FILE = "stack.yaml"
#: The configs and secrets a release uses, one ``kind name`` per line; the
#: prune after a deploy keeps every object a kept release lists.
OBJECTS_FILE = "swarm-objects"
STACK_VERSION = "3.9"
#: Swarm's own default ``monitor``; no healthcheck means no longer window.
DEFAULT_MONITOR = 5
MAX_NAME = 64  # swarm's limit for config and secret names
HASH_LEN = 12

# The service keys of the compose file format 3.9 that a stack keeps.
SERVICE_KEYS = frozenset({
    "cap_add", "cap_drop", "cgroup_parent", "command", "configs", "credential_spec",
    "deploy", "devices", "dns", "dns_search", "domainname", "entrypoint", "env_file",
    "environment", "expose", "external_links", "extra_hosts", "healthcheck", "hostname",
    "image", "init", "ipc", "isolation", "labels", "links", "logging", "mac_address",
    "network_mode", "networks", "pid", "ports", "privileged", "read_only", "secrets",
    "security_opt", "shm_size", "stdin_open", "stop_grace_period", "stop_signal", "sysctls",
    "tmpfs", "tty", "ulimits", "user", "userns_mode", "volumes", "working_dir",
})
# Dropped without a note: swarm ignores them anyway, or deployer handled them.
QUIET_DROP = frozenset({"build", "container_name", "depends_on", "pull_policy", "profiles",
                        "restart"})
TOP_KEYS = ("services", "networks", "volumes", "configs", "secrets")
HEALTHCHECK_KEYS = frozenset({"test", "interval", "timeout", "retries", "start_period",
                              "disable"})

Lookup = Callable[[str], "str | None"]
# (kind, key in the stack file, release path, its facts, mount target)
Mount = tuple[Literal["config", "secret"], str, str, "FileInfo", str]


@dataclass(frozen=True)
class FileInfo:
    """An uploaded file of the release, as the conversion needs it."""

    sha256: str
    mode: int
    secret: bool = False


@dataclass(frozen=True)
class SwarmObject:
    """A config or secret the stack creates from a release file."""

    kind: Literal["config", "secret"]
    key: str  # its name inside the stack file
    name: str  # in the swarm: <app>_<key>_<hash>
    file: str  # release-relative path


@dataclass(frozen=True)
class Job:
    """A one-shot taken out of the stack: run to completion before the
    stack deploy. ``networks``: the swarm names of the networks it joins."""

    service: str
    spec: dict[str, Any]
    networks: tuple[str, ...]


@dataclass
class Stack:
    text: str
    services: list[str]
    objects: list[SwarmObject] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)  # swarm names the stack creates
    notes: list[str] = field(default_factory=list)

    def objects_text(self) -> str:
        """The :data:`OBJECTS_FILE` of the release."""
        return "".join(f"{o.kind} {o.name}\n" for o in self.objects)


def by_digest(images: Mapping[str, str]) -> dict[str, str]:
    """Each pinned ref of ``images`` (``name:tag@digest``) -> ``name@digest``,
    the form the stack names it by (see the module doc); refs without a
    digest are left out (they stay as written)."""
    out: dict[str, str] = {}
    for ref in images.values():
        name, _tag, digest = split_ref(ref)
        if digest:
            out[ref] = f"{name}@{digest}"
    return out


def object_name(app: str, key: str, sha256: str) -> str:
    """``<app>_<key>_<hash>``, within swarm's 64 characters (the key is
    shortened when it must be) and its alphabet."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", key).strip("._-") or "file"
    room = MAX_NAME - len(app) - HASH_LEN - 2
    return f"{app}_{safe[:room].rstrip('._-')}_{sha256[:HASH_LEN]}"


def parse_duration(value: object) -> float | None:
    """A compose duration (``1m30s``, ``500ms``, ``10``) in seconds; None
    when it is not one."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str) or not value:
        return None
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|ns|h|m|s)", value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(n) * units[u] for n, u in parts)


def healthcheck_window(hc: object) -> float:
    """How long a failing healthcheck takes to say so: ``start_period`` plus
    ``retries`` probes of ``interval`` + ``timeout`` (Docker's defaults: 30s,
    30s, 3 retries). 0 without a healthcheck."""
    if not isinstance(hc, dict) or hc.get("disable") or hc.get("test") in (["NONE"], "NONE"):
        return 0.0
    interval = parse_duration(hc.get("interval", "30s")) or 30.0
    timeout = parse_duration(hc.get("timeout", "30s")) or 30.0
    start = parse_duration(hc.get("start_period", "0s")) or 0.0
    retries = hc.get("retries", 3)
    retries = retries if isinstance(retries, int) and retries > 0 else 3
    return start + retries * (interval + timeout)


def update_policy(svc: Mapping[str, Any]) -> dict[str, Any]:
    """The update policy deployer injects into a service that sets none."""
    monitor = max(DEFAULT_MONITOR, math.ceil(healthcheck_window(svc.get("healthcheck"))))
    return {
        "parallelism": 1,
        "order": "stop-first" if publishes_host_ports(svc) else "start-first",
        "failure_action": "rollback",
        "monitor": f"{monitor}s",
        "max_failure_ratio": 0,
    }


def publishes_host_ports(svc: Mapping[str, Any]) -> bool:
    ports = svc.get("ports")
    return isinstance(ports, list) and any(
        isinstance(p, dict) and p.get("mode") == "host" for p in ports
    )


def convert(
    text: str,
    *,
    app: str,
    files: Mapping[str, FileInfo],
    where: str,
    oneshot: Collection[str] = (),
    shared_prefix: str | None = None,
    lookup: Lookup | None = None,
    compose_dir: str = ".",
    images: Mapping[str, str] | None = None,
) -> Stack:
    """The stack for the compose ``text`` (see the module doc). ``files``:
    every uploaded file by release path; ``shared_prefix``: where
    :func:`deployer.project.server_compose` put data bind sources (they are
    refused); ``lookup``: the variables compose would see (None: ``$`` is
    left as written); ``images``: image refs to write otherwise (from
    :func:`by_digest`)."""
    return _Converter(text, app, files, where, set(oneshot), shared_prefix, lookup,
                      compose_dir, images or {}).run()


class _Converter:
    def __init__(self, text: str, app: str, files: Mapping[str, FileInfo], where: str,
                 oneshot: set[str], shared_prefix: str | None, lookup: Lookup | None,
                 compose_dir: str, images: Mapping[str, str]) -> None:
        self.text = text
        self.app = app
        self.files = files
        self.where = where
        self.oneshot = oneshot
        self.shared_prefix = shared_prefix.rstrip("/") + "/" if shared_prefix else None
        self.lookup = lookup
        self.base = compose_dir
        self.images = images
        self.objects: dict[tuple[str, str], SwarmObject] = {}
        self.notes: list[str] = []

    def interp(self, value: Any, what: str) -> Any:
        """Every string in ``value`` with ``${VAR}`` resolved and ``$`` escaped."""
        if isinstance(value, dict):
            return {k: self.interp(v, f"{what}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [self.interp(v, f"{what}[{i}]") for i, v in enumerate(value)]
        if not isinstance(value, str) or self.lookup is None or "$" not in value:
            return value
        try:
            return escape(substitute(value, self.lookup))
        except ValueError as e:
            raise ConfigError(f"{self.where}: {what}: {e}",
                              "set the variable in the environment or in .env") from None

    def run(self) -> Stack:
        doc = load_fast(self.text)
        if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
            raise ConfigError(f"{self.where}: the compose file has no 'services' mapping")
        doc = self.interp(doc, "")
        out: dict[str, Any] = {"version": STACK_VERSION}
        for key in sorted(k for k in doc if k not in TOP_KEYS and k != "version"
                          and not str(k).startswith("x-")):
            self.notes.append(f"top-level {key!r} dropped: a stack file has no such key")
        top: dict[str, dict[str, Any]] = {}
        for section in ("configs", "secrets"):
            top[section] = dict(self._top_objects(doc.get(section), section))
        services: dict[str, Any] = {}
        jobs: list[Job] = []
        for name, svc in doc["services"].items():
            converted = self._service(name, svc, top)
            if name in self.oneshot:
                jobs.append(Job(name, converted, self._job_networks(converted, doc)))
            else:
                services[name] = converted
        if not services:
            raise ConfigError(f"{self.where}: no service is left for the stack "
                              "(every one is a one-shot)")
        out["services"] = services
        for section in ("networks", "volumes"):
            if isinstance(doc.get(section), dict):
                out[section] = doc[section]
        for section in ("configs", "secrets"):
            if top[section]:
                out[section] = top[section]
        text = yaml.safe_dump(out, sort_keys=False, default_flow_style=False, width=4096)
        return Stack(
            text=text,
            services=list(services),
            objects=sorted(self.objects.values(), key=lambda o: (o.kind, o.key)),
            jobs=jobs,
            networks=self._stack_networks(out),
            notes=self.notes,
        )

    # -- top-level configs and secrets -----------------------------------

    def _top_objects(self, entries: object, section: str) -> Any:
        if not isinstance(entries, dict):
            return
        kind: Literal["config", "secret"] = "config" if section == "configs" else "secret"
        for key, spec in entries.items():
            if not isinstance(spec, dict) or not spec.get("file") or spec.get("name"):
                yield key, spec  # external, named by the user, or from the environment
                continue
            path = str(spec["file"])
            if posixpath.isabs(path):
                yield key, spec  # a file on the manager: the user's business
                continue
            rel = posixpath.normpath(posixpath.join(self.base, path))
            info = self.files.get(rel)
            if info is None:
                raise ConfigError(f"{self.where}: {section}.{key}.file: {path!r} is not "
                                  "in the release", "ship it (it is copied when it exists)")
            obj = self._object(kind, str(key), rel, info)
            yield key, {**spec, "name": obj.name, "file": _dot(rel, self.base)}

    def _object(self, kind: Literal["config", "secret"], key: str, rel: str,
                info: FileInfo) -> SwarmObject:
        obj = SwarmObject(kind, key, object_name(self.app, key, info.sha256), rel)
        self.objects[(kind, key)] = obj
        return obj

    # -- services ----------------------------------------------------------

    def _service(self, name: str, svc: dict[str, Any], top: dict[str, dict[str, Any]]
                 ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in svc.items():
            if key in SERVICE_KEYS:
                out[key] = value
            elif key not in QUIET_DROP:
                self.notes.append(f"service {name}: {key!r} dropped: a stack does not take it")
        if isinstance(out.get("image"), str):
            out["image"] = self.images.get(out["image"], out["image"])
        if "env_file" in out:
            out["env_file"] = self._env_files(out["env_file"])
            if not out["env_file"]:
                del out["env_file"]
        if isinstance(out.get("healthcheck"), dict):
            out["healthcheck"] = {k: v for k, v in out["healthcheck"].items()
                                  if k in HEALTHCHECK_KEYS}
        if isinstance(out.get("ports"), list):
            out["ports"] = [_port(p) for p in out["ports"]]
        if isinstance(out.get("volumes"), list):
            self._volumes(name, out, top)
        if name in self.oneshot:
            return out
        deploy = dict(out.get("deploy") or {})
        if "update_config" not in deploy:
            deploy["update_config"] = update_policy(out)
        out["deploy"] = deploy
        return out

    def _env_files(self, value: Any) -> list[str]:
        items = value if isinstance(value, list) else [value]
        paths = []
        for item in items:
            if isinstance(item, dict):
                path = str(item.get("path", ""))
                rel = posixpath.normpath(posixpath.join(self.base, path))
                if item.get("required", True) is False and rel not in self.files:
                    continue
                paths.append(path)
            else:
                paths.append(str(item))
        return paths

    def _volumes(self, name: str, out: dict[str, Any], top: dict[str, dict[str, Any]]) -> None:
        kept: list[Any] = []
        for i, vol in enumerate(out["volumes"]):
            what = f"service {name}: volumes[{i}]"
            source, target = _bind_parts(vol)
            if source is None or target is None:
                kept.append(vol)
                continue
            if self.shared_prefix and (source + "/").startswith(self.shared_prefix):
                self._refuse_data(name, what, source)
            if not source.startswith("."):
                kept.append(vol)  # an absolute host path: the same on every node
                continue
            rel = posixpath.normpath(posixpath.join(self.base, source))
            mounted = self._mounts(rel, target)
            if not mounted:
                self._refuse_data(name, what, source)
            for kind, key, path, info, at in mounted:
                section = "configs" if kind == "config" else "secrets"
                obj = self._object(kind, key, path, info)
                top[section][key] = {"file": _dot(obj.file, self.base), "name": obj.name}
                out.setdefault(section, []).append(
                    {"source": key, "target": at, "mode": info.mode})
        if kept:
            out["volumes"] = kept
        else:
            del out["volumes"]

    def _mounts(self, rel: str, target: str) -> list[Mount]:
        """The config or secret mounts that replace a bind of ``rel`` at
        ``target``: one for a file, one per file for a directory."""
        found: list[Mount] = []
        if rel in self.files:
            items = [(rel, target)]
        else:
            prefix = "" if rel == "." else rel.rstrip("/") + "/"
            items = [(p, posixpath.join(target, p[len(prefix):]))
                     for p in sorted(self.files) if p.startswith(prefix)]
        for path, at in items:
            info = self.files[path]
            kind: Literal["config", "secret"] = "secret" if info.secret else "config"
            found.append((kind, path.replace("/", "_"), path, info, at))
        return found

    def _refuse_data(self, name: str, what: str, source: str) -> None:
        shown = source
        if self.shared_prefix and source.startswith(self.shared_prefix):
            shown = "./" + source[len(self.shared_prefix):]
        raise ConfigError(
            f"{self.where}: {what}: bind mount source {shown!r} is data; with target: swarm "
            "one stack serves every node, and a directory on one node is not there on another",
            f"use a named volume (volumes: [{name}-data:/path], kept on the node that runs "
            f"the task) and pin the service to that node with deploy.placement.constraints "
            f"(e.g. [node.hostname == db-1])",
        )

    # -- networks ------------------------------------------------------------

    def _net_name(self, key: str, doc: Mapping[str, Any]) -> str:
        nets = doc.get("networks") if isinstance(doc.get("networks"), dict) else {}
        spec = nets.get(key) if isinstance(nets, dict) else None
        if isinstance(spec, dict) and spec.get("name"):
            return str(spec["name"])
        return f"{self.app}_{key}"

    def _job_networks(self, svc: Mapping[str, Any], doc: Mapping[str, Any]) -> tuple[str, ...]:
        nets = svc.get("networks")
        keys = list(nets) if isinstance(nets, (list, dict)) else ["default"]
        return tuple(self._net_name(str(k), doc) for k in keys)

    def _stack_networks(self, out: Mapping[str, Any]) -> list[str]:
        """The overlay networks ``stack deploy`` creates (not external ones)."""
        declared = out.get("networks") if isinstance(out.get("networks"), dict) else {}
        used: set[str] = set()
        for svc in out["services"].values():
            nets = svc.get("networks")
            if svc.get("network_mode"):
                continue
            used.update(str(k) for k in (nets if isinstance(nets, (list, dict)) else ["default"]))
        names = []
        for key in sorted(used):
            spec = declared.get(key) if isinstance(declared, dict) else None
            if isinstance(spec, dict) and spec.get("external"):
                continue
            names.append(self._net_name(key, out))
        return names


def _bind_parts(vol: Any) -> tuple[str | None, str | None]:
    """(source, target) of a bind mount; (None, None) for anything else."""
    if isinstance(vol, str):
        parts = vol.split(":")
        if len(parts) >= 2 and (parts[0].startswith((".", "/", "~"))):
            return parts[0], parts[1]
        return None, None
    if isinstance(vol, dict) and vol.get("type") == "bind":
        return str(vol.get("source", "")), str(vol.get("target", ""))
    return None, None


def _dot(rel: str, base: str) -> str:
    """A release path written relative to the stack file (in ``base``)."""
    return "./" + posixpath.relpath(rel, base)


def _port(p: Any) -> Any:
    """The long syntax with ``published`` as the number the 3.9 format wants."""
    if isinstance(p, dict) and isinstance(p.get("published"), str) and p["published"].isdigit():
        return {**p, "published": int(p["published"])}
    return p
