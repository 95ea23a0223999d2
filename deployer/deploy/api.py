"""The API the CLI calls: whole runs, end to end.

Each command is one function taking a :class:`Target` (project folder,
environment, ``--limit`` and rollout overrides) and a reporter. It loads and
validates the project, renders every targeted host (so a template or config
error stops the run before any image is built or any host is touched), runs
the images stage when it ships, rolls the per-host job out over the one
bounded runner, tells the reporter the outcome and returns the
:class:`~deployer.report.model.RunReport`. It prints nothing itself, except
the one line that acknowledges a Ctrl-C.

:func:`ship_hosts` and the functions of :mod:`deployer.deploy.day2` take an
already loaded project and hosts instead (tests).
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from deployer.commands.release import read_state
from deployer.config import Host, Project
from deployer.deploy import day2
from deployer.deploy.dryrun import ASSUMING, HostDryRun, dry_run_host, plan_settings
from deployer.deploy.hostrun import HostRun
from deployer.deploy.rollout import RolloutPolicy, parse_batches
from deployer.deploy.runner import RunOptions, ssh_executor
from deployer.deploy.runner import run_command as _run_command
from deployer.deploy.ship import HostShip, ShipSettings
from deployer.errors import ConfigError
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

if TYPE_CHECKING:
    from deployer.commands import health, release
    from deployer.images.progress import ImageReporter

__all__ = [
    "DryRun", "RunOptions", "Stamp", "Target", "bootstrap", "exec_in", "image_stage", "load",
    "lock", "logs", "new_stamp", "plan", "policy_for", "releases", "render", "rollback", "ship",
    "ship_hosts", "ssh_executor", "status", "unlock",
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


@contextlib.contextmanager
def interruptible(cancel: threading.Event) -> Iterator[None]:
    """First Ctrl-C: set ``cancel`` (start no more hosts; those in flight
    finish their step and complete or roll back). Second: abort. The
    previous handler comes back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        if cancel.is_set():
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        cancel.set()
        sys.stderr.write("\ninterrupt: finishing hosts in flight (Ctrl-C again to abort)\n")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


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


def plan(target: Target, tag: str | None = None, stamp: Stamp | None = None) -> DryRun:
    project, hosts, _ = load(target)
    stamp = stamp or new_stamp(_tag(project, tag))
    p = _render(project, hosts, stamp)
    settings = plan_settings(p.project, stamp.who, stamp.when)
    return DryRun(p, {hp.host.name: dry_run_host(p.project, hp, settings) for hp in p.hosts})


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
    return Preconnected(hosts[:first], opts.executor, read_state(project.deploy_dir))


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
    image refs (default: build and push)."""
    stamp = stamp or new_stamp(_tag(project, tag))
    tag = stamp.tag
    stage = stage or image_stage(False)
    if project.inventory.target == "swarm":
        from deployer.swarm.ship import ship_stack

        return ship_stack(project, hosts, reporter, opts, stamp, stage)
    # Every host renders before anything is built or touched: a template
    # error costs no build, no push and no connection.
    _render(project, hosts, stamp)
    pre = preconnect_first_batch(project, hosts, opts)
    try:
        images = stage(project, tag)
        plan = build_plan(project, hosts, images, stamp.release, tag)
        by_host = {hp.host.name: hp for hp in plan.hosts}
        settings = ShipSettings(
            who=stamp.who, when=stamp.when,
            health_timeout=project.config.health_timeout,
            keep_releases=project.config.keep_releases,
            cancel=opts.cancel,
        )

        def job(ex: Executor, run: HostRun, host: Host) -> HostReport:
            hp: HostPlan = by_host[host.name]
            return HostShip(project, hp, ex, run, settings).ship()

        rep = reporter()
        # Ctrl-C during the image stage aborts it at once; from here on it
        # stops starting hosts and lets those in flight finish.
        with interruptible(opts.cancel):
            run = _run_command("ship", project, hosts, job, rep,
                               dataclasses.replace(opts, executor=pre.executor),
                               release=stamp.release, images=images)
        rep.finish(run)
        return run
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
    with interruptible(opts.cancel):
        return _finished(reporter, day2.rollback(project, hosts, to, reporter, opts))


def releases(target: Target, reporter: Reporter
             ) -> tuple[RunReport, dict[str, release.Releases]]:
    project, hosts, opts = load(target, all_at_once=True)
    run, found = day2.releases(project, hosts, reporter, opts)
    return _finished(reporter, run), found


def status(target: Target, reporter: Reporter
           ) -> tuple[RunReport, dict[str, list[health.ContainerRow]]]:
    project, hosts, opts = load(target, all_at_once=True)
    run, rows = day2.status(project, hosts, reporter, opts)
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
    """On the first host ``--limit`` selects."""
    project, hosts, opts = load(target, all_at_once=True)
    host = hosts[0]
    return host, day2.exec_in(project, host, service, argv, interactive, on_line, reporter,
                              opts)
