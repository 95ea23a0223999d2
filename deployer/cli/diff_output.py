"""``deployer plan ENV --diff``: parse, call :mod:`deployer.deploy.diff`, print.

Text: per host its changed files as unified diffs, the images and services
that change, and drift. ``-o json``: :meth:`DiffReport.data` as is. Exit 0
when every host could be inspected, 1 when one could not.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from deployer.cli.output import out, raw, raw_json
from deployer.cli.state import State

if TYPE_CHECKING:
    from deployer.deploy.diff import DiffReport, FileChange, HostDiff


def run_plan_diff(state: State, env: str, limit: str | None, tag: str | None) -> None:
    import typer

    from deployer.config import load_project
    from deployer.deploy.api import RunOptions
    from deployer.deploy.diff import diff_plan, plan_diff
    from deployer.deploy.rollout import RolloutPolicy
    from deployer.errors import EXIT_DEPLOY, ConfigError
    from deployer.report.reporters import PlainReporter
    from deployer.tags import is_valid_tag, project_tag

    project = load_project(state.project_dir, env)
    hosts = project.select(limit)
    if tag is not None and not is_valid_tag(tag):
        raise ConfigError(f"--tag {tag!r} is not a valid image tag",
                          "letters, digits, '_', '.', '-'; at most 128")
    # Every host is read (a failure stops nothing), at most max_parallel at once.
    policy = RolloutPolicy(batches=["100%"], max_parallel=project.inventory.rollout.max_parallel,
                    max_fail_percentage=100.0)
    if project.inventory.target == "swarm":  # the stack, read on the first manager
        from deployer.cli.swarm_diff import print_stack_diff
        from deployer.swarm.diff import stack_diff
        from deployer.swarm.topology import check

        check(project)
        d = stack_diff(project, hosts, tag or project_tag(project.root),
                       PlainReporter(io.StringIO()), RunOptions(policy=policy))
        print_stack_diff(d, state.output == "json")
        if not d.ok:
            raise typer.Exit(EXIT_DEPLOY)
        return
    plan, unpinned = diff_plan(project, hosts, tag or project_tag(project.root))
    report = plan_diff(project, plan, PlainReporter(io.StringIO()), RunOptions(policy=policy),
                       unpinned=unpinned)
    if state.output == "json":
        raw_json(report.data())  # masked before serialising
    else:
        print_report(report)
    if not report.ok:
        raise typer.Exit(EXIT_DEPLOY)


def print_report(report: DiffReport) -> None:
    out(f"[bold]plan --diff[/bold] {report.app} -> {report.env}: release {report.release} "
        f"(tag {report.tag}), {len(report.hosts)} hosts")
    for name in report.unpinned:
        out(f"  image {name}: {report.images[name]} is not in the registry yet; "
            "ship builds, pushes and pins it", markup=False)
    for h in report.hosts:
        out("")
        _host(h)


def _file(f: FileChange, indent: str = "    ") -> None:
    extra = [x for x in (f"mode {f.mode}" if f.mode else None, f.note) if x]
    out(f"{indent}{f.status:<9} {f.dest}" + (f"  ({'; '.join(extra)})" if extra else ""),
        markup=False)
    if f.diff:
        raw(f.diff)


def host_head(host: str, where: str, current: str | None, *, error: str | None,
              unchanged: bool, first_release: bool, same_fingerprint: bool) -> bool:
    """A host's heading and the verdicts that come before its changes
    (compose hosts and a swarm's first manager alike); False when nothing
    follows (an error, or unchanged)."""
    cur = f"current {current}" if current else "no current release"
    out(f"[bold]== {host}[/bold] ({where}, {cur})")
    if error:
        out(f"  error: {error}", markup=False)
        return False
    if unchanged:
        out("  unchanged")
        return False
    if first_release:
        out("  first release: every file is new")
    if same_fingerprint:
        out("  release unchanged (same fingerprint): ship changes nothing here, "
            "so the drift below stays")
    return True


def _host(h: HostDiff) -> None:
    if not host_head(h.host, h.address, h.current, error=h.error, unchanged=h.unchanged,
                     first_release=h.first_release, same_fingerprint=h.same_fingerprint):
        return
    changed = [f for f in h.files if f.status != "unchanged"]
    same = len(h.files) - len(changed)
    if not changed:
        out(f"  files: all {same} unchanged")
    else:
        out(f"  files ({same} unchanged):" if same else "  files:")
        for f in changed:
            _file(f)
    if h.images:
        out("  images:")
        for i in h.images:
            out(f"    {i.name}: {i.old or '-'} -> {i.new or '-'}", markup=False)
    if h.recreate or h.start or h.remove:
        out("  services (deployer's prediction from the compose file, "
            "not compose's own config hash):")
        for verb, group in (("recreate", h.recreate), ("start", h.start),
                            ("remove", h.remove)):
            for svc, why in sorted(group.items()):
                out(f"    {verb:<8} {svc}: {why}", markup=False)
    elif not h.same_fingerprint:
        out("  services: none recreated, started or removed (deployer's prediction)")
    if h.drift_files or h.drift_containers:
        out("  [yellow]drift[/yellow] (the host no longer matches its current release):")
        for f in h.drift_files:
            _file(f)
        for svc, what in sorted(h.drift_containers.items()):
            out(f"    container {svc}: {what}", markup=False)
    if h.docker != "ok":
        out(f"  containers: not inspected (docker {h.docker})", markup=False)
    if h.proxy is not None:
        _proxy(h.proxy)


def _proxy(p: dict[str, Any]) -> None:
    """The edge proxy's steps and this app's route changes (proxy/plan_diff.py)."""
    image = f" {p['image']}" if p["image"] else ""
    out(f"  proxy: {p['container']}{image}", markup=False)
    if p["up_to_date"] is False:
        out(f"    out of date: the release names {p['configured']}; ship leaves it "
            "(`deployer proxy upgrade`)", markup=False)
    if p["maintenance"]:
        out("    maintenance on: the routes keep answering with the page", markup=False)
    out(f"    steps: {', '.join(p['steps'])}", markup=False)
    for r in p["routes"]:
        what = f"  ({r['what']})" if r["what"] else ""
        out(f"    {r['status']:<9} {r['id']}{what}", markup=False)
