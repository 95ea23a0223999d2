"""``check`` and ``plan``: offline, nothing touches a host."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deployer.cli.output import err, esc, out, raw, raw_json
from deployer.cli.state import State
from deployer.errors import ConfigError

if TYPE_CHECKING:
    from deployer.deploy.api import DryRun, Target
    from deployer.plan import Plan
    from deployer.release_files import ReleaseFile

# What plan adds to a step's name, so the output says what ship decides there.
_STEP_NOTES = {
    "read current release": "unchanged if its manifest's public_fingerprint is {fingerprint} "
                            "and its secret files are the same",
    "check docker": "bootstrap if missing: `deployer bootstrap` shows how",
    "wait healthy": "up to {timeout}s; services: {services}",
    "prune releases": "keep {keep}",
    "upload release": "one tar stream: {files} files + manifest.json, {bytes} bytes",
    "registry login": "password on stdin",
    "check free space": "release files + images not on the host + min_free {min_free}",
    "prune images": "removes the app's images and stopped containers no kept release uses",
    "audit log": "one JSON line appended to <deploy_dir>/audit.log",
    "switch the proxy": "one graceful config load of this app's routes (the maintenance "
                        "page instead while `deployer maintenance` is on)",
}


def _target(state: State, env: str, limit: str | None) -> Target:
    from deployer.deploy.api import Target

    return Target(state.project_dir, env, limit)


def _notes(plan: Plan) -> None:
    """What compose reading found worth saying (once per note), on stderr."""
    for note in dict.fromkeys(n for hp in plan.hosts for n in hp.compose.notes):
        err(f"note: {note}", markup=False)


def run_check(state: State, env: str) -> None:
    from deployer.deploy import api

    plan = api.render(_target(state, env, None))
    _notes(plan)
    n_files = sum(len(h.files) for h in plan.hosts)
    if state.output == "json":
        raw_json({"ok": True, "env": env, "hosts": len(plan.hosts), "files": n_files}, None)
        return
    n_copied = sum(f.kind == "copy" for h in plan.hosts for f in h.files)
    copied = f", {n_copied} copied" if n_copied else ""
    out(
        f"ok: {plan.project.config.app} / {esc(env)}: {len(plan.hosts)} hosts, "
        f"{n_files - n_copied} files rendered{copied}, {len(plan.images)} images"
    )


def file_row(f: ReleaseFile) -> dict[str, Any]:
    """A release file as ``plan`` shows it: a secret's hash is never shown,
    and a copy's bytes are not printed (binary, and possibly large)."""
    from deployer.plan import holds_secret

    row: dict[str, Any] = {"dest": f.dest, "mode": f"{f.mode:04o}", "size": f.length,
                           "kind": f.kind, "origin": f.origin,
                           "sha256": "secret" if holds_secret(f) else f.sha256}
    if f.kind == "template":
        row["content"] = f.content.decode(errors="replace")
    return row


def plan_data(dry: DryRun) -> dict[str, Any]:
    from deployer.diskspace import human
    from deployer.hooks import LOCAL, configured
    from deployer.images.estimate import describe, image_sends

    plan = dry.plan
    p = plan.project
    sends = image_sends(p, plan.tag)  # registry: none only
    out: dict[str, Any] = {
        "app": p.app,
        "env": p.env,
        "release": plan.release,
        "tag": plan.tag,
        "images": plan.images,
        "assuming": dry.assuming,
        "hooks": [{"hook": n, "where": "local" if n in LOCAL else "each host", "argv": a}
                  for n, a in configured(p)],
        "hosts": [],
    }
    if dry.stack is not None:  # target: swarm
        out["stack"] = dry.stack
    for hp in plan.hosts:
        facts = {"fingerprint": hp.public_fingerprint[:12],
                 "timeout": f"{p.config.health_timeout:.0f}",
                 "services": ", ".join(hp.compose.services),
                 "keep": str(p.config.keep_releases),
                 "files": str(len(hp.files)),
                 "bytes": str(sum(f.length for f in hp.files)),
                 "min_free": human(int(p.config.min_free))}
        out["hosts"].append({
            "name": hp.host.name,
            "address": hp.host.address,
            "groups": list(hp.host.groups),
            "services": hp.compose.services,
            "shared_dirs": hp.compose.shared_dirs,
            "fingerprint": hp.public_fingerprint,
            "files": [file_row(f) for f in hp.files],
            "steps": [
                {"step": s.name,
                 **({"note": _STEP_NOTES[s.name].format(**facts)} if s.name in _STEP_NOTES else {}),
                 "commands": s.commands()}
                for s in dry.hosts[hp.host.name].steps
            ],
        })
        if sends is not None:
            out["hosts"][-1]["images_sent"] = sends
            for step in out["hosts"][-1]["steps"]:
                if step["step"] == "pull images":
                    step["note"] = describe(sends)
    return out


def run_plan(state: State, env: str, limit: str | None, tag: str | None, files: bool,
             diff: bool = False, out_dir: Path | None = None) -> None:
    if diff:  # reads the hosts: deployer/deploy/diff.py, printed by cli/diff_output.py
        if out_dir is not None:
            raise ConfigError("plan: --out and --diff go separately",
                              "run `plan ENV --out DIR`, then `plan ENV --diff`")
        from deployer.cli.diff_output import run_plan_diff

        return run_plan_diff(state, env, limit, tag)
    from deployer.deploy import api

    dry = api.plan(_target(state, env, limit), tag)
    plan = dry.plan
    _notes(plan)
    data = plan_data(dry)
    if out_dir is not None:
        from deployer.release_tar import write_plan

        data["out"] = [str(path) for path in write_plan(plan, out_dir)]
    if state.output == "json":
        raw_json(data)
        return
    p = plan.project
    out(f"[bold]plan[/bold] {esc(p.app)} -> {esc(env)}: release {esc(plan.release)}, "
        f"{len(plan.hosts)} hosts")
    for name, ref in plan.images.items():
        out(f"  image {name}: {ref}  (digest pinned at ship)", markup=False)
    out(f"  assuming: {dry.assuming}", markup=False)
    for hk in data["hooks"]:
        out(f"  hook {hk['hook']} ({hk['where']}): {shlex.join(hk['argv'])}", markup=False)
    for h in data["hosts"]:
        out("")
        groups = ",".join(h["groups"]) or "-"
        out(f"[bold]== {esc(h['name'])}[/bold] ({esc(h['address'])}, groups: {esc(groups)}, "
            f"services: {esc(', '.join(h['services']))})")
        out(f"release files ({p.deploy_dir}/releases/{plan.release}/):")
        for f in h["files"]:
            digest = f["sha256"] if f["sha256"] == "secret" else f["sha256"][:12]
            out(f"  {f['mode']} {f['size']:>9} {digest:<12} {f['kind']:<8} {f['dest']}"
                + (f"  (from {f['origin']})" if f["origin"] != f["dest"] else ""),
                markup=False)
        for d in h["shared_dirs"]:
            out(f"  data     {p.deploy_dir}/shared/{d}  (kept across releases, never uploaded)",
                markup=False)
        if files:
            for f in h["files"]:
                if "content" not in f:
                    continue
                out(f"--- {p.deploy_dir}/releases/{plan.release}/{f['dest']} "
                    f"(mode {f['mode']}, sha256 {f['sha256'][:12]})", markup=False)
                raw(f["content"])
        out("steps:")
        for i, s in enumerate(h["steps"], 1):
            note = f" ({s['note']})" if "note" in s else ""
            out(f"  {i}. {s['step']}{note}", markup=False)
            for c in s["commands"]:
                out(f"       $ {c}", markup=False)
    if "stack" in data:
        _stack(data["stack"])
    for path in data.get("out", []):
        out(f"wrote {path}/ (the release folder as it would be uploaded)", markup=False)


def _stack(stack: dict[str, Any]) -> None:
    """target: swarm: the stack's services, configs and secrets."""
    out("")
    out(f"stack: services {', '.join(stack['services'])}"
        + (f"; one-shots first, as swarm jobs: {', '.join(stack['oneshots'])}"
           if stack["oneshots"] else ""), markup=False)
    for o in stack["objects"]:
        out(f"  create {o['kind']} {o['name']}  (from {o['file']})", markup=False)
    for note in stack["notes"]:
        out(f"  note: {note}", markup=False)
