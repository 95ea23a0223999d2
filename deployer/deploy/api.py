"""The API the CLI calls: whole runs, end to end.

Each command is one function taking a :class:`Target` (project folder,
environment, ``--limit`` and rollout overrides) and a reporter. It loads and
validates the project, renders every targeted host (so a template or config
error stops the run before any image is built or any host is touched), runs
the images stage when it ships, rolls the per-host job out over the one
bounded runner, tells the reporter the outcome and returns the
:class:`~deployer.report.model.RunReport`. It prints nothing itself, except
(through :mod:`deployer.deploy.interrupt`) the line that acknowledges each
Ctrl-C, SIGTERM or SIGHUP.

:func:`ship_hosts` and the functions of :mod:`deployer.deploy.day2` take an
already loaded project and hosts instead (tests).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deployer.audit import audited
from deployer.audit import context as audit_context
from deployer.commands.release import read_state
from deployer.config import Host, Project
from deployer.deploy import day2
from deployer.deploy.dryrun import ASSUMING, HostDryRun, dry_run_host, plan_settings
from deployer.deploy.hostrun import HostRun
from deployer.deploy.interrupt import as_keyboard_interrupt, interruptible
from deployer.deploy.lease import lease_seconds
from deployer.deploy.rollout import RolloutPolicy, parse_batches
from deployer.deploy.runner import RunOptions, ssh_executor
from deployer.deploy.runner import run_command as _run_command
from deployer.deploy.ship import HostShip, ShipSettings
from deployer.diskspace import ImageSizes
from deployer.errors import ConfigError, DeployError
from deployer.hooks import run_local as run_local_hook
from deployer.plan import (
    HostPlan,
    Plan,
    build_plan,
    deployer_identity,
    image_refs,
    new_release_id,
    utc_timestamp,
)
from deployer.remote.base import Executor
from deployer.remote.preconnect import Preconnected
from deployer.report.model import HostReport, RunReport
from deployer.report.reporters import Reporter
from deployer.secrets import mask

if TYPE_CHECKING:
    from deployer.commands import health, release
    from deployer.images.progress import ImageReporter

__all__ = [
    "DryRun", "RunOptions", "Stamp", "Target", "audit", "bootstrap", "exec_in", "image_stage",
    "load", "lock", "logs", "maintenance", "new_stamp", "plan", "policy_for", "proxy_logs",
    "proxy_restart", "proxy_status", "proxy_upgrade", "prune", "releases", "render",
    "rollback", "ship", "ship_hosts", "ssh_executor", "status", "unlock",
]

ReporterFactory = Callable[[], Reporter]
ImageStage = Callable[[Project, str], dict[str, str]]  # (project, tag) -> pinned refs


@dataclass(frozen=True)
class Target:
    """What a command runs on, as the command line gives it."""

    root: Path
    env: str
    limit: str | None = None
    batches: str | None = None  # "1,25%,100%"
    max_parallel: int | None = None
    environ: Mapping[str, str] | None = None  # default: os.environ


@dataclass(frozen=True)
class Stamp:
    """One run's identity: the release id it creates, who runs it, when."""

    tag: str
    release: str
    who: str
    when: str


def new_stamp(tag: str) -> Stamp:
    return Stamp(tag, new_release_id(tag), deployer_identity(), utc_timestamp())


def policy_for(project: Project, batches: list[int | str] | None = None,
               max_parallel: int | None = None) -> RolloutPolicy:
    r = project.inventory.rollout
    return RolloutPolicy(
        batches=list(batches or r.batches),
        max_parallel=max_parallel or r.max_parallel,
        max_fail_percentage=r.max_fail_percentage,
        pause=r.pause,
        max_connecting=r.max_connecting,
    )


def load(target: Target, *, all_at_once: bool = False) -> tuple[Project, list[Host], RunOptions]:
    """Load and validate the project, select the hosts, and the run's
    options (``all_at_once``: one batch, for commands that change nothing)."""
    from deployer.config import load_project

    if target.max_parallel is not None and target.max_parallel < 1:
        raise ConfigError("--max-parallel must be at least 1")
    project = load_project(target.root, target.env, target.environ)
    if project.inventory.target == "swarm":
        from deployer.swarm.topology import check

        check(project)
    hosts = project.select(target.limit)
    batches: list[int | str] | None = ["100%"] if all_at_once else (
        parse_batches(target.batches) if target.batches else None)
    return project, hosts, RunOptions(policy_for(project, batches, target.max_parallel))


def _tag(project: Project, tag: str | None) -> str:
    """``--tag`` checked before anything renders, or the tag from git."""
    from deployer.tags import is_valid_tag, project_tag

    if tag is not None and not is_valid_tag(tag):
        raise ConfigError(
            f"--tag {tag[:130]!r} is not a valid image tag",
            "letters, digits, '_', '.', '-'; at most 128; not starting with '.' or '-'",
        )
    return tag or project_tag(project.root)


def image_stage(skip_build: bool, progress: ImageReporter | None = None) -> ImageStage:
    """The images stage: build and push every image (or, ``skip_build``,
    look up the ones already pushed); the result pins each by digest."""

    def stage(project: Project, tag: str) -> dict[str, str]:
        if not project.config.images:
            return {}
        from deployer.images import stage as images

        if skip_build:
            return images.resolve_pushed(project, tag, progress)
        return images.build_and_push(project, tag, progress)

    return stage


# -- plan and check --------------------------------------------------------


def render(target: Target, tag: str | None = None, stamp: Stamp | None = None) -> Plan:
    """Every targeted host's files, rendered with the offline image refs
    (``check``; the first thing every ship does)."""
    project, hosts, _ = load(target)
    stamp = stamp or new_stamp(_tag(project, tag))
    if project.inventory.target == "swarm":  # the stack too: its rules are check's
        from deployer.swarm.ship import check_stack

        check_stack(project, image_refs(project, stamp.tag), stamp.release, stamp.tag)
    return _render(project, hosts, stamp)


def _render(project: Project, hosts: list[Host], stamp: Stamp) -> Plan:
    return build_plan(project, hosts, image_refs(project, stamp.tag), stamp.release, stamp.tag)


@dataclass
class DryRun:
    """``plan``: what ship uploads and runs on each host, assuming the host
    is as :data:`assuming` says."""

    plan: Plan
    hosts: dict[str, HostDryRun]
    assuming: str = ASSUMING
    stack: dict[str, Any] | None = None  # target: swarm (deployer.swarm.dryrun.stack_view)


def plan(target: Target, tag: str | None = None, stamp: Stamp | None = None) -> DryRun:
    project, hosts, _ = load(target)
    stamp = stamp or new_stamp(_tag(project, tag))
    if project.inventory.target == "swarm":  # ship's swarm job against scripted nodes
        from deployer.swarm.dryrun import plan_stack

        return DryRun(*plan_stack(project, hosts, stamp))
    p = _render(project, hosts, stamp)
    settings = dataclasses.replace(plan_settings(p.project, stamp.who, stamp.when),
                                   hosts=tuple(h.name for h in hosts))
    audit = audit_context(p.project)  # git runs once per plan, not per host
    return DryRun(p, {hp.host.name: dry_run_host(p.project, hp, settings, audit)
                      for hp in p.hosts})


# -- ship ------------------------------------------------------------------


def preconnect_first_batch(project: Project, hosts: list[Host],
                           opts: RunOptions) -> Preconnected:
    """Open the first batch's connections and send each its state read now,
    so both overlap the image stage (the benchmark's no-op ship spent most of
    its time in the three, one after the other). Use the result's
    ``executor`` as the run's executor factory; nothing that changes a host
    runs before the stage succeeds, and the ship reads the state again under
    its lock if another run switched releases in between. Close the result
    when the run is over."""
    first = opts.policy.first_wave(len(hosts))
    return Preconnected(hosts[:first], opts.executor, read_state(project.deploy_dir),
                        max_connecting=opts.policy.max_connecting)


def ship(target: Target, reporter: ReporterFactory, *, tag: str | None = None,
         skip_build: bool = False, progress: ImageReporter | None = None) -> RunReport:
    """``deployer ship``: load, render every host, images, rollout, report."""
    project, hosts, opts = load(target)
    return ship_hosts(project, hosts, reporter, opts, tag=tag,
                      stage=image_stage(skip_build, progress))


def ship_hosts(project: Project, hosts: list[Host], reporter: ReporterFactory,
               opts: RunOptions, *, tag: str | None = None,
               stage: ImageStage | None = None, stamp: Stamp | None = None) -> RunReport:
    """Ship to ``hosts`` of a loaded project. ``stage`` gives the pinned
    image refs (default: build and push). The local hooks run around it:
    pre_build first, post_deploy after the last host, on_failure when the
    run fails."""
    stamp = stamp or new_stamp(_tag(project, tag))
    stage = stage or image_stage(False)
    lease = lease_seconds()
    # Every host renders before anything is built or touched: a template
    # error costs no build, no push and no connection.
    _render(project, hosts, stamp)
    if project.inventory.target == "swarm":  # --limit and the stack, before any hook
        from deployer.swarm.ship import check_ship

        check_ship(project, hosts, stamp)
    names = [h.name for h in hosts]
    reps: list[Reporter] = []

    def log(line: str) -> None:
        if reps:
            reps[0].log("local", line)
        else:  # the reporter (a live view) starts after the image stage
            sys.stderr.write(mask(f"local: {line}") + "\n")

    def hook(name: str) -> None:
        run_local_hook(project, name, stamp.release, names, log)

    def make_reporter() -> Reporter:
        reps.append(reporter())
        return reps[0]

    try:
        hook("pre_build")  # before anything is built or any host is connected
        # SIGTERM and SIGHUP during the image stage stop it as Ctrl-C does.
        with as_keyboard_interrupt():
            run = _ship_run(project, hosts, make_reporter, opts, stamp, stage, hook, lease)
    except BaseException:
        _on_failure(hook, log)
        raise
    rep = reps[0]
    post_failed: DeployError | None = None
    if run.ok:
        try:
            hook("post_deploy")
        except DeployError as e:
            post_failed = e
    else:
        _on_failure(hook, log)
    rep.finish(run)
    if post_failed is not None:
        raise post_failed
    return run


def _on_failure(hook: Callable[[str], None], log: Callable[[str], None]) -> None:
    """The on_failure hook; its own failure is only reported."""
    try:
        hook("on_failure")
    except DeployError as e:
        log(e.message)


def _ship_run(project: Project, hosts: list[Host], reporter: ReporterFactory, opts: RunOptions,
              stamp: Stamp, stage: ImageStage, hook: Callable[[str], None],
              lease: int) -> RunReport:
    """The images, the pre_deploy hook and the rollout."""
    if project.inventory.target == "swarm":  # one job on the first manager
        from deployer.swarm.ship import ship_stack

        return ship_stack(project, hosts, reporter, opts, stamp, stage, hook)
    tag = stamp.tag
    pre = preconnect_first_batch(project, hosts, opts)
    try:
        images = stage(project, tag)
        plan = build_plan(project, hosts, images, stamp.release, tag)
        by_host = {hp.host.name: hp for hp in plan.hosts}
        settings = ShipSettings(
            who=stamp.who, when=stamp.when,
            health_timeout=project.config.health_timeout,
            keep_releases=project.config.keep_releases,
            cancel=opts.cancel, abort=opts.abort, lease=lease,
            hosts=tuple(h.name for h in hosts),
            image_sizes=ImageSizes(images).get,
        )
        rep = reporter()
        hook("pre_deploy")  # after the images, before the first host

        def ship_host(ex: Executor, run: HostRun, host: Host) -> HostReport:
            hp: HostPlan = by_host[host.name]
            return HostShip(project, hp, ex, run, settings).ship()

        job = audited("ship", audit_context(project), ship_host)

        # Ctrl-C during the image stage aborts it at once; from here on the
        # first signal stops starting hosts and lets those in flight finish,
        # the second rolls them back (deployer.deploy.interrupt).
        with interruptible(opts.cancel, opts.abort):
            return _run_command("ship", project, hosts, job, rep,
                                dataclasses.replace(opts, executor=pre.executor),
                                release=stamp.release, images=images)
    finally:
        pre.close()


# -- day 2 -----------------------------------------------------------------


def _finished(reporter: Reporter, run: RunReport) -> RunReport:
    reporter.finish(run)
    return run


def bootstrap(target: Target, reporter: Reporter) -> RunReport:
    project, hosts, opts = load(target, all_at_once=True)
    return _finished(reporter, day2.bootstrap(project, hosts, reporter, opts))


def rollback(target: Target, reporter: Reporter, to: str | None = None) -> RunReport:
    project, hosts, opts = load(target)
    lease_seconds()  # a bad DEPLOYER_LOCK_LEASE stops it before any host is touched
    with interruptible(opts.cancel, opts.abort):
        return _finished(reporter, day2.rollback(project, hosts, to, reporter, opts))


def releases(target: Target, reporter: Reporter
             ) -> tuple[RunReport, dict[str, release.Releases]]:
    project, hosts, opts = load(target, all_at_once=True)
    run, found = day2.releases(project, hosts, reporter, opts)
    return _finished(reporter, run), found


def status(target: Target, reporter: Reporter, proxies: dict[str, Any] | None = None,
           ) -> tuple[RunReport, dict[str, list[health.ContainerRow]]]:
    """``proxies``: filled with each host's proxy and routes (deploy/day2.py)."""
    project, hosts, opts = load(target, all_at_once=True)
    run, rows = day2.status(project, hosts, reporter, opts, proxies)
    return _finished(reporter, run), rows


def lock(target: Target, reporter: Reporter, message: str) -> RunReport:
    project, hosts, opts = load(target, all_at_once=True)
    return _finished(reporter, day2.set_lock(project, hosts, message, reporter, opts))


def unlock(target: Target, reporter: Reporter) -> RunReport:
    project, hosts, opts = load(target, all_at_once=True)
    return _finished(reporter, day2.unlock(project, hosts, reporter, opts))


def logs(target: Target, reporter: Reporter, on_line: day2.HostLine, *,
         service: str | None = None, tail: int = 100, follow: bool = False,
         on_hosts: Callable[[list[str]], None] | None = None) -> RunReport:
    """``on_hosts``: told the selected hosts' names before any line comes."""
    project, hosts, opts = load(target, all_at_once=True)
    if on_hosts is not None:
        on_hosts([h.name for h in hosts])
    with interruptible(opts.cancel):
        return day2.logs(project, hosts, service, tail, follow, on_line, reporter, opts)


def exec_in(target: Target, reporter: Reporter, on_line: day2.HostLine, service: str,
            argv: list[str], *, interactive: bool = False) -> tuple[Host, day2.ExecResult]:
    """On the first host ``--limit`` selects (target: swarm: on a node
    where a task of the service runs, see :mod:`deployer.swarm.day2`)."""
    project, hosts, opts = load(target, all_at_once=True)
    if project.inventory.target == "swarm":  # on the node where a task runs
        from deployer.swarm.day2 import exec_stack

        return exec_stack(project, hosts, service, argv, interactive, on_line, reporter, opts)
    host = hosts[0]
    return host, day2.exec_in(project, host, service, argv, interactive, on_line, reporter,
                              opts)


def audit(target: Target, reporter: Reporter, *, since: str | None = None,
          lines: int = 100) -> tuple[RunReport, list[dict[str, Any]]]:
    """``deployer audit``: the targeted hosts' audit logs merged, newest
    first, at most ``lines`` entries since ``since``."""
    from deployer import audit as trail

    if lines < 1:
        raise ConfigError("--lines must be at least 1")
    floor = trail.parse_since(since) if since is not None else None
    project, hosts, opts = load(target, all_at_once=True)
    found: dict[str, list[dict[str, Any]]] = {}
    run = _run_command("audit", project, hosts, trail.read_job(project.deploy_dir, lines, found),
                       reporter, opts)
    return _finished(reporter, run), trail.merge(found.values(), floor, lines)


def prune(target: Target, reporter: Reporter) -> RunReport:
    """``deployer prune``: remove the app's images and stopped containers no
    kept release uses, on every targeted host."""
    from deployer.prune import prune_job

    project, hosts, opts = load(target, all_at_once=True)
    stamp = new_stamp("prune")
    job = audited("prune", audit_context(project),
                  prune_job(project, stamp.who, stamp.when, f"prune-{stamp.when}"))
    return _finished(reporter, _run_command("prune", project, hosts, job, reporter, opts))


# -- the edge proxy (deployer/proxy/) ------------------------------------------


def maintenance(target: Target, reporter: Reporter, on: bool,
                message: str | None = None) -> RunReport:
    """``deployer maintenance ENV on|off``: every targeted host at once."""
    from deployer.proxy import maintenance as m

    project, hosts, opts = load(target, all_at_once=True)
    return _finished(reporter, m.run(project, hosts, on, message, reporter, opts))


def proxy_status(target: Target, reporter: Reporter
                 ) -> tuple[RunReport, dict[str, Any]]:
    """``deployer proxy status``: ``{host: ProxyStatus}`` (deployer/proxy/ops.py)."""
    from deployer.proxy import ops

    project, hosts, opts = load(target, all_at_once=True)
    run, found = ops.status(project, hosts, reporter, opts)
    return _finished(reporter, run), dict(found)


def proxy_logs(target: Target, reporter: Reporter, on_line: day2.HostLine, *,
               tail: int = 100, follow: bool = False,
               on_hosts: Callable[[list[str]], None] | None = None) -> RunReport:
    from deployer.proxy import ops

    project, hosts, opts = load(target, all_at_once=True)
    if on_hosts is not None:
        on_hosts([h.name for h in hosts])
    with interruptible(opts.cancel):
        return ops.logs(project, hosts, tail, follow, on_line, reporter, opts)


def proxy_restart(target: Target, reporter: Reporter) -> RunReport:
    """One host at a time, stopping at the first failure."""
    from deployer.proxy import ops

    project, hosts, opts = load(target)
    return _finished(reporter, ops.restart(project, hosts, reporter, opts))


def proxy_upgrade(target: Target, reporter: Reporter, *, tag: str | None = None,
                  on_image: Callable[[str], None] | None = None) -> RunReport:
    """Pull (or mirror and push) the configured proxy image, then recreate the
    proxy with it, one host at a time. ``on_image``: told the reference first."""
    from deployer.proxy import ops

    project, hosts, opts = load(target)
    ops.needs_proxy(project)
    image = ops.resolve_image(project, _tag(project, tag))
    if on_image is not None:
        on_image(image)
    return _finished(reporter, ops.upgrade(project, hosts, reporter, opts, image))
