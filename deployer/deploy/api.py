"""The API the CLI calls: whole runs over the inventory.

Each function loads nothing and prints nothing: it takes a validated
:class:`Project`, the targeted hosts and a reporter, runs the per-host job
over the rollout, and returns a :class:`RunReport`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from deployer.commands.release import read_state
from deployer.config import Host, Project
from deployer.deploy.hostrun import HostRun
from deployer.deploy.rollout import Policy, batch_sizes, rollout
from deployer.deploy.ship import Counting, HostShip, Interrupted, ShipSettings
from deployer.errors import DeployerError, HostError
from deployer.plan import HostPlan, build_plan, deployer_identity, new_release_id
from deployer.remote.base import Executor
from deployer.remote.preconnect import Preconnected
from deployer.report.model import HostReport, RunReport
from deployer.report.reporters import Reporter
from deployer.secrets import mask

ExecutorFactory = Callable[[Host], Executor]


def ssh_executor(host: Host) -> Executor:
    from deployer.remote.executor import SSHExecutor

    return SSHExecutor(host)


@dataclass
class RunOptions:
    policy: Policy = field(default_factory=Policy)
    cancel: threading.Event = field(default_factory=threading.Event)
    executor: ExecutorFactory = ssh_executor


def policy_for(project: Project, batches: list[int | str] | None = None,
               max_parallel: int | None = None) -> Policy:
    r = project.inventory.rollout
    return Policy(
        batches=list(batches or r.batches),
        max_parallel=max_parallel or r.max_parallel,
        max_fail_percentage=r.max_fail_percentage,
        pause=r.pause,
    )


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_over_hosts(
    items: list[HostPlan] | list[Host],
    host_of: Callable[[object], Host],
    job: Callable[[Executor, HostRun, object], HostReport],
    reporter: Reporter,
    opts: RunOptions,
) -> list[HostReport]:
    """The rollout of a per-host ``job``: one connection per host, opened on
    first use and closed at the end; host failures become reports."""

    def one(item: object, batch: int) -> HostReport:
        host = host_of(item)
        run = HostRun(host.name, reporter)
        ex = opts.executor(host)
        counting = Counting(ex)
        try:
            rep = job(counting, run, item)
        except Interrupted as e:
            # Ctrl-C reached this host at a safe point, before anything that
            # changes what it runs: it keeps its old release, exactly like the
            # hosts the rollout never reached, so it is reported the same way.
            run.release = None
            rep = run.report("skipped", detail=f"interrupted before {e.step}; nothing changed")
        except HostError as e:
            text = f"{run.current or 'connect'}: {e.reason}" if e.host == host.name else e.message
            if e.hint:  # what to do (accept a host key, add sudo) belongs on the same line
                text += f" (hint: {e.hint})"
            rep = run.report("failed", error=text)
        except DeployerError as e:
            rep = run.report("failed", error=e.message)
        except Exception as e:  # a bug must fail one host, not the run
            rep = run.report("failed", error=f"internal error: {type(e).__name__}: {mask(str(e))}")
        finally:
            with contextlib.suppress(Exception):  # closing a dead connection
                ex.close()
        rep.batch = batch
        rep.connections = getattr(ex, "connections_opened", None)
        rep.commands = counting.commands
        rep.bytes_uploaded = counting.bytes_uploaded
        reporter.host_done(rep)
        return rep

    slots = rollout(
        list(items), one, lambda r: not isinstance(r, HostReport) or not r.ok,
        opts.policy, cancel=opts.cancel,
        on_batch=lambda n, its: reporter.batch(n, [host_of(i).name for i in its]),
    )
    out: list[HostReport] = []
    for s in slots:
        name = host_of(s.item).name
        if s.skipped:
            rep = HostReport(name, "skipped", batch=s.batch or None,
                             detail="interrupted" if opts.cancel.is_set()
                             else "not reached: rollout stopped after failures")
            reporter.host_done(rep)
        elif isinstance(s.outcome, HostReport):
            rep = s.outcome
        else:
            rep = HostReport(name, "failed", error=f"internal error: {s.outcome!r}")
        out.append(rep)
    return out


def preconnect_first_batch(project: Project, hosts: list[Host], opts: RunOptions) -> Preconnected:
    """Open the first batch's connections and send each its state read now,
    so both overlap the image stage (the benchmark's no-op ship spent most of
    its time in the three, one after the other); :func:`ship` then uses them
    through ``opts.executor``. Nothing that changes a host runs before the
    stage succeeds, and the ship reads the state again under its lock if
    another run switched releases in between. Close the result when the run
    is over."""
    sizes = batch_sizes(len(hosts), opts.policy.batches)
    first = min(sizes[0] if sizes else 0, opts.policy.max_parallel)
    pre = Preconnected(hosts[:first], opts.executor, read_state(project.deploy_dir))
    opts.executor = pre.executor
    return pre


def ship(
    project: Project,
    hosts: list[Host],
    images: dict[str, str],
    tag: str,
    reporter: Reporter,
    opts: RunOptions,
) -> RunReport:
    """Ship ``images`` (pinned refs, already pushed) to ``hosts``."""
    t0 = time.monotonic()
    release_id = new_release_id(tag)
    plan = build_plan(project, hosts, images, release_id, tag)
    settings = ShipSettings(
        who=deployer_identity(),
        when=_now(),
        health_timeout=project.config.health_timeout,
        keep_releases=project.config.keep_releases,
        cancel=opts.cancel,
    )

    def job(ex: Executor, run: HostRun, item: object) -> HostReport:
        assert isinstance(item, HostPlan)
        return HostShip(project, item, ex, run, settings).ship()

    reports = run_over_hosts(plan.hosts, lambda i: i.host, job, reporter, opts)  # type: ignore[attr-defined]
    return RunReport(
        "ship", project.app, project.env, release_id, dict(images), reports,
        time.monotonic() - t0, interrupted=opts.cancel.is_set(),
    )
