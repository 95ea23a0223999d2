"""``plan ENV --diff`` with ``target: swarm``: what a ship would change in
the stack, read on the first manager. Read-only.

Two commands on the first manager: the same file inspection as for compose
(:func:`deployer.commands.inspect.inspect_host`: the current release's
files against the plan's, with diffs, secrets never shown), and
:func:`stack_inspect`: the current release's stack file, the stack's
configs and secrets, and its live services with their tasks. From those:

- the configs and secrets a ship creates (named by content, so a changed
  file is a new one);
- the services ``stack deploy`` would create, update or remove, each with
  why: **deployer's prediction** from the two stack files (a service whose
  definition changed, whose config or secret is a new one, that is new or
  gone), not swarm's own comparison. The stack file holds resolved
  variables, secrets among them: it is read into memory to compare, and
  only service names and the names of changed keys are shown;
- drift: services that do not run what the current release says (fewer
  tasks running than desired, an update swarm rolled back);
- ``unchanged``: the fingerprint equals the current release's and nothing
  drifted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from deployer.commands.base import Command, Script
from deployer.commands.inspect import inspect_host, parse_inspection
from deployer.config import Host, Project
from deployer.deploy.diff import (
    FileChange,
    ImageChange,
    host_diff,
    resolve_images,
    sentinel_files,
    services_of,
    wanted,
    yaml_doc,
)
from deployer.deploy.hostrun import HostRun
from deployer.deploy.runner import RunOptions, run_over_hosts
from deployer.errors import HostError
from deployer.plan import Plan, new_release_id
from deployer.remote.base import Executor
from deployer.report.model import HostReport
from deployer.report.reporters import Reporter
from deployer.secrets import mask
from deployer.swarm import gate
from deployer.swarm.commands import PROBE_MARK, STACK_LABEL
from deployer.swarm.stack import STACK_FILE

PREDICTION = "deployer's prediction from the stack files, not swarm's own comparison"
_STACK, _OBJECTS, _SERVICES = "@@deployer stack", "@@deployer objects", "@@deployer services"

_INSPECT = f"""
app=$1
dir=$2
command docker version >/dev/null 2>&1 || docker() {{ sudo -n docker "$@"; }}
echo '{_STACK}'
cat "$dir/current/{STACK_FILE}" 2>/dev/null
echo '{_OBJECTS}'
for kind in config secret; do
  docker "$kind" ls --filter "label={STACK_LABEL}=$app" --format "$kind {{{{.Name}}}}" 2>/dev/null
done
echo '{_SERVICES}'
ids=$(docker service ls -q --filter "label={STACK_LABEL}=$app" 2>/dev/null)
[ -n "$ids" ] || exit 0
docker service inspect $ids
echo '{PROBE_MARK}'
docker service ps --no-trunc --format '{{{{json .}}}}' $ids
""".strip()


def stack_inspect(app: str, deploy_dir: str) -> Command:
    """Read-only, on the first manager (``sudo -n docker`` only where plain
    docker is refused): the current stack file, the stack's configs and
    secrets (``kind name`` lines), its services and tasks."""
    return Script(_INSPECT, (app, deploy_dir), description="inspect the stack").command()


@dataclass
class StackState:
    stack_text: str | None  # None: no current stack file (or not readable)
    objects: set[str]  # "config NAME", "secret NAME"
    services: dict[str, gate.ServiceState]


def parse_stack_inspect(stdout: str) -> StackState:
    head, _, rest = stdout.partition(_STACK + "\n")
    text, _, rest = rest.partition(_OBJECTS + "\n")
    objects, _, services = rest.partition(_SERVICES + "\n")
    del head
    return StackState(text if text.strip() else None,
                      {ln.strip() for ln in objects.splitlines() if ln.strip()},
                      gate.parse_probe(services))


def resolved(doc: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Service ``name`` with each config and secret it mounts named by the
    object's swarm name (which carries the content hash), so a changed file
    shows as a changed service."""
    svc = dict(services_of(doc).get(name) or {})
    for kind in ("configs", "secrets"):
        top = doc.get(kind) if isinstance(doc.get(kind), dict) else {}
        refs = svc.get(kind)
        if not isinstance(refs, list):
            continue
        out = []
        for r in refs:
            ref = dict(r) if isinstance(r, dict) else {"source": r}
            spec = top.get(ref.get("source")) if isinstance(top, dict) else None
            if isinstance(spec, dict) and spec.get("name"):
                ref["name"] = spec["name"]
            out.append(ref)
        svc[kind] = out
    return svc


def _why(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = sorted(k for k in {*old, *new} if old.get(k) != new.get(k))
    parts: list[str] = []
    for k in keys:
        if k in ("configs", "secrets"):
            before = {str(r.get("name") or r.get("source")) for r in old.get(k) or []}
            names = sorted(str(r.get("source")) for r in new.get(k) or []
                           if str(r.get("name") or r.get("source")) not in before)
            parts.append(f"{k[:-1]} {', '.join(names)} changed" if names else k)
        elif k == "image" and isinstance(new.get(k), str) and "@" not in new[k]:
            parts.append("image not in the registry yet: it updates only if the image ship "
                         "builds differs")
        elif k == "image":
            parts.append("image changed")
        else:
            parts.append(f"definition changed ({k})")
    return "; ".join(parts) or "definition changed"


def predict(app: str, new_doc: Mapping[str, Any], old_doc: Mapping[str, Any] | None,
            live: Mapping[str, gate.ServiceState], *, first_release: bool
            ) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """(create, update, remove), each service -> why, for ``stack deploy
    --prune`` of ``new_doc`` over ``old_doc`` (the current stack file; None:
    not readable) with ``live`` services (``<app>_<name>`` -> state)."""
    new, old = services_of(new_doc), services_of(old_doc)
    create: dict[str, str] = {}
    update: dict[str, str] = {}
    for name in new:
        there = f"{app}_{name}" in live
        if first_release or (name not in old and not there):
            create[name] = "new service"
        elif not there:
            create[name] = "no such service in the swarm"
        elif old_doc is None:
            update[name] = "current stack file not readable; assumed changed"
        else:
            a, b = resolved(old_doc, name), resolved(new_doc, name)
            if a != b:
                update[name] = _why(a, b)
    gone = {*old, *(s.removeprefix(f"{app}_") for s in live)} - set(new)
    remove = dict.fromkeys(sorted(gone), "not in the new stack (stack deploy --prune)")
    return create, update, remove


def drift(app: str, services: list[str], live: Mapping[str, gate.ServiceState]
          ) -> dict[str, str]:
    """Services of the current stack that do not run as it says."""
    out: dict[str, str] = {}
    for name in services:
        st = live.get(f"{app}_{name}")
        if st is None:
            out[name] = "no such service in the swarm"
        elif st.update_state == "rollback_completed":
            out[name] = "its last update was rolled back by swarm"
        elif st.running < st.desired or (st.global_mode and st.desired == 0):
            out[name] = f"{st.running}/{st.desired} tasks running"
    return out


@dataclass
class StackDiff:
    """``plan --diff`` of a swarm: the first manager's release and the stack."""

    app: str
    env: str
    tag: str
    release: str
    host: str
    address: str
    current: str | None = None
    first_release: bool = True
    same_fingerprint: bool = False
    images: dict[str, str] = field(default_factory=dict)
    unpinned: list[str] = field(default_factory=list)
    files: list[FileChange] = field(default_factory=list)
    image_changes: list[ImageChange] = field(default_factory=list)
    objects: list[str] = field(default_factory=list)  # "config NAME" a ship creates
    create: dict[str, str] = field(default_factory=dict)
    update: dict[str, str] = field(default_factory=dict)
    remove: dict[str, str] = field(default_factory=dict)
    drift: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def unchanged(self) -> bool:
        return self.ok and self.same_fingerprint and not self.drift

    def data(self) -> dict[str, Any]:
        """The JSON shape (``plan --diff -o json``); masked."""
        def fc(f: FileChange) -> dict[str, Any]:
            return {k: v for k, v in dataclasses.asdict(f).items() if v is not None}

        return {
            "app": self.app, "env": self.env, "release": self.release, "tag": self.tag,
            "images": dict(self.images), "unpinned_images": list(self.unpinned),
            "target": "swarm",
            "hosts": [{
                "name": self.host, "address": self.address, "current": self.current,
                "release": self.release, "unchanged": self.unchanged,
                "first_release": self.first_release,
                "same_fingerprint": self.same_fingerprint, "error": self.error,
                "files": [fc(f) for f in self.files],
                "images": [dataclasses.asdict(i) for i in self.image_changes],
                "stack": {
                    "create_objects": list(self.objects),
                    "services": {"create": sorted(self.create), "update": sorted(self.update),
                                 "remove": sorted(self.remove),
                                 "why": {**self.create, **self.update, **self.remove},
                                 "note": PREDICTION},
                    "drift": [{"service": s, "problem": p} for s, p in sorted(self.drift.items())],
                },
            }],
        }


def stack_diff(project: Project, hosts: list[Host], tag: str, reporter: Reporter,
               opts: RunOptions) -> StackDiff:
    """Read the first manager and compare (see the module doc). A manager
    that cannot be read gives ``error``."""
    from deployer.swarm.ship import stack_plan, whole_cluster

    topo = whole_cluster(project, hosts, "plan --diff")
    images, unpinned = resolve_images(project, tag)
    hp, stack = stack_plan(project, topo.first, images, new_release_id(tag), tag)
    sentinels = sentinel_files(project, Plan(project, hp.release, tag, images, [hp]))
    out = StackDiff(project.app, project.env, tag, hp.release, topo.first.name,
                    topo.first.address, images=dict(images), unpinned=list(unpinned))

    def job(ex: Executor, run: HostRun, host: Host) -> HostReport:
        with run.step("inspect"):
            res = ex.run(inspect_host(project.deploy_dir, project.project_name, wanted(hp)))
            try:
                ins = parse_inspection(res.stdout)
            except ValueError as e:
                raise HostError(host.name, "inspect", str(e)) from None
        with run.step("inspect the stack"):
            state = parse_stack_inspect(ex.run(stack_inspect(project.app,
                                                             project.deploy_dir)).stdout)
        hd = host_diff(project, hp, ins, sentinels.get(host.name))
        out.current, out.first_release = ins.current, hd.first_release
        out.same_fingerprint = hd.same_fingerprint
        out.files, out.image_changes = hd.files, hd.images
        if not hd.same_fingerprint:
            out.objects = [f"{o.kind} {o.name}" for o in stack.objects
                           if f"{o.kind} {o.name}" not in state.objects]
            out.create, out.update, out.remove = predict(
                project.app, yaml_doc(stack.text) or {}, yaml_doc(state.stack_text), state.services,
                first_release=hd.first_release)
        if not hd.first_release:
            old = yaml_doc(state.stack_text)
            out.drift = drift(project.app, list(services_of(old)) or stack.services,
                              state.services)
        return run.report("ok", release=ins.current)

    (rep,) = run_over_hosts([topo.first], job, reporter, opts)
    if not rep.ok:
        out.error = mask(rep.error or rep.detail or "not inspected")
    return out
