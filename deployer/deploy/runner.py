"""Running one per-host job over many hosts: the one bounded runner.

Every fan-out (ship, rollback, status, logs, ...) goes through
:func:`run_over_hosts`: the rollout's batches and ``max_parallel``, one
executor per host (opened on first use, closed at the end), and every host
failure turned into that host's report instead of an exception.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from deployer.config import Host, Project
from deployer.deploy.hostrun import HostRun
from deployer.deploy.rollout import RolloutPolicy, batch_sizes, rollout
from deployer.deploy.ship import StoppedBeforeStep
from deployer.errors import DeployerError, HostError
from deployer.remote.base import Counting, Executor
from deployer.report.model import HostReport, RunReport
from deployer.report.reporters import Reporter
from deployer.secrets import mask

log = logging.getLogger(__name__)

ExecutorFactory = Callable[[Host], Executor]
Job = Callable[[Executor, HostRun, Host], HostReport]


def ssh_executor(host: Host) -> Executor:
    from deployer.remote.executor import SSHExecutor

    return SSHExecutor(host)


@dataclass
class RunOptions:
    """How a run goes over its hosts; never changed by the run."""

    policy: RolloutPolicy = field(default_factory=RolloutPolicy)
    cancel: threading.Event = field(default_factory=threading.Event)  # first interrupt
    abort: threading.Event = field(default_factory=threading.Event)  # second: roll back
    executor: ExecutorFactory = ssh_executor


def run_host(host: Host, ex: Executor, job: Job, reporter: Reporter) -> HostReport:
    """``job`` on one host; whatever goes wrong becomes its report. Closes
    ``ex``."""
    run = HostRun(host.name, reporter)
    counting = Counting(ex)
    try:
        rep = job(counting, run, host)
    except StoppedBeforeStep as e:
        # Ctrl-C reached this host at a safe point, before anything that
        # changes what it runs: it keeps its old release, exactly like the
        # hosts the rollout never reached, so it is reported the same way.
        rep = run.report("skipped", release=None,
                         detail=f"interrupted before {e.step}; nothing changed")
    except HostError as e:
        # The step that raised; an error raised between steps names its own
        # (the owner check after the state read), never the last step that
        # ran, which may be the audit log written after the failure.
        step = run.failed or getattr(e, "step", "") or run.current or "connect"
        text = f"{step}: {e.reason}" if e.host == host.name else e.message
        if e.hint:  # what to do (accept a host key, add sudo) belongs on the same line
            text += f" (hint: {e.hint})"
        rep = run.report("failed", error=text)
    except DeployerError as e:
        rep = run.report("failed", error=e.message)
    except Exception as e:  # a bug must fail one host, not the run
        # -v shows where: the one-line report alone cannot be debugged.
        log.debug("%s: internal error", host.name, exc_info=True)
        rep = run.report("failed", error=f"internal error: {type(e).__name__}: {mask(str(e))}")
    finally:
        with contextlib.suppress(Exception):  # closing a dead connection
            ex.close()
    stats = counting.stats()
    rep.connections = stats.connections_opened
    rep.commands = stats.commands
    rep.bytes_uploaded = stats.bytes_uploaded
    return rep


def run_over_hosts(hosts: list[Host], job: Job, reporter: Reporter,
                   opts: RunOptions) -> list[HostReport]:
    """The rollout of a per-host ``job``, one report per host in order."""

    def one(host: Host, batch: int) -> HostReport:
        rep = run_host(host, opts.executor(host), job, reporter)
        rep.batch = batch
        reporter.host_done(rep)
        return rep

    from deployer.remote.ssh import run_scope

    reporter.start([h.name for h in hosts], batch_sizes(len(hosts), opts.policy.batches))
    # One scope per run: jump hosts shared by all its hosts, handshakes bounded.
    with run_scope(opts.policy.max_connecting):
        slots = rollout(
            list(hosts), one, lambda r: not isinstance(r, HostReport) or not r.ok,
            opts.policy, cancel=opts.cancel,
            on_batch=lambda n, hs: reporter.batch(n, [h.name for h in hs]),
        )
    out: list[HostReport] = []
    for s in slots:
        if s.skipped:
            rep = HostReport(s.item.name, "skipped", batch=s.batch or None,
                             detail="interrupted" if opts.cancel.is_set()
                             else "not reached: rollout stopped after failures")
            reporter.host_done(rep)
        elif isinstance(s.outcome, HostReport):
            rep = s.outcome
        else:
            rep = HostReport(s.item.name, "failed", error=f"internal error: {s.outcome!r}")
        out.append(rep)
    return out


def run_command(command: str, project: Project, hosts: list[Host], job: Job,
                reporter: Reporter, opts: RunOptions, *, release: str | None = None,
                images: dict[str, str] | None = None) -> RunReport:
    """:func:`run_over_hosts`, as the run's report."""
    t0 = time.monotonic()
    reports = run_over_hosts(hosts, job, reporter, opts)
    return RunReport(command, project.app, project.env, release, dict(images or {}), reports,
                     time.monotonic() - t0, interrupted=opts.cancel.is_set())
