"""``ship``, ``bootstrap``, ``rollback`` and the day-2 commands.

Each parses, loads the project, picks a reporter, calls :mod:`deployer.deploy`
and maps the run's result to an exit code: 0 when every host is fine, 1 when
any failed, 130 when interrupted.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from typing import TYPE_CHECKING, Optional

import typer

from deployer.cli.state import State, get_state
from deployer.errors import EXIT_DEPLOY, EXIT_INTERRUPTED

if TYPE_CHECKING:
    from deployer.config import Host, Project
    from deployer.deploy.api import RunOptions
    from deployer.report.model import RunReport
    from deployer.report.reporters import Reporter

EnvArg = typer.Argument(..., help="Environment: the name of inventories/ENV.yaml.")
LimitOpt = typer.Option(None, "--limit", "-l", help="Host names, group names or globs.")


def _load(ctx: typer.Context, env: str, limit: str | None) -> tuple[State, Project, list[Host]]:
    from deployer.config import load_project

    state = get_state(ctx)
    project = load_project(state.project_dir, env)
    return state, project, project.select(limit)


def _opts(project: Project, batches: str | None = None, max_parallel: int | None = None,
          ) -> RunOptions:
    from deployer.deploy.api import RunOptions, policy_for
    from deployer.deploy.rollout import parse_batches

    if max_parallel is not None and max_parallel < 1:
        from deployer.errors import ConfigError

        raise ConfigError("--max-parallel must be at least 1")
    policy = policy_for(project, parse_batches(batches) if batches else None, max_parallel)
    return RunOptions(policy=policy, cancel=threading.Event())


def _reporter(state: State) -> Reporter:
    from deployer.report.reporters import choose_reporter

    return choose_reporter(state.output)


def _finish(reporter: Reporter, run: RunReport) -> None:
    reporter.finish(run)
    if run.interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
    if not run.ok:
        raise typer.Exit(EXIT_DEPLOY)


def _interruptible(opts: RunOptions) -> None:
    """First Ctrl-C: stop starting hosts, let those in flight finish their
    step and complete or roll back. Second Ctrl-C: the default (abort)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame: object) -> None:
        if opts.cancel.is_set():
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        opts.cancel.set()
        sys.stderr.write("\ninterrupt: finishing hosts in flight (Ctrl-C again to abort)\n")

    signal.signal(signal.SIGINT, handler)


def ship(
    ctx: typer.Context,
    env: str = EnvArg,
    limit: Optional[str] = LimitOpt,  # noqa: UP045
    tag: Optional[str] = typer.Option(None, "--tag", help="Image tag (default: from git)."),  # noqa: UP045
    skip_build: bool = typer.Option(False, "--skip-build", help="Use images already pushed."),
    batches: Optional[str] = typer.Option(None, "--batches", help="e.g. 1,25%,100%"),  # noqa: UP045
    max_parallel: Optional[int] = typer.Option(None, "--max-parallel"),  # noqa: UP045
) -> None:
    """Build and push once, then deploy to every host: upload, compose up,
    wait healthy, roll back on failure."""
    from deployer.deploy.api import preconnect_first_batch
    from deployer.deploy.api import ship as do_ship
    from deployer.tags import project_tag

    state, project, hosts = _load(ctx, env, limit)
    opts = _opts(project, batches, max_parallel)
    tag = tag or project_tag(project.root)
    pre = preconnect_first_batch(project, hosts, opts)
    try:
        images = _images(state, project, tag, skip_build)
        # do_ship renders every host before it starts any: a template error
        # stops the run there, with nothing changed (the early reads change
        # nothing).
        reporter = _reporter(state)
        _interruptible(opts)
        _finish(reporter, do_ship(project, hosts, images, tag, reporter, opts))
    finally:
        pre.close()


def _images(state: State, project: Project, tag: str, skip_build: bool) -> dict[str, str]:
    if not project.config.images:
        return {}
    from deployer.cli.output import console, in_ci
    from deployer.images.progress import make_reporter

    err_console = console(True)
    reporter = make_reporter(err_console, plain=in_ci() or not err_console.is_terminal,
                             verbose=state.verbose)
    if skip_build:
        from deployer.images.stage import resolve_pushed

        return resolve_pushed(project, tag, reporter)
    from deployer.images.stage import build_and_push

    return build_and_push(project, tag, reporter)


def bootstrap(
    ctx: typer.Context,
    env: str = EnvArg,
    limit: Optional[str] = LimitOpt,  # noqa: UP045
    max_parallel: Optional[int] = typer.Option(None, "--max-parallel"),  # noqa: UP045
) -> None:
    """Install Docker and compose where missing (idempotent)."""
    from deployer.deploy import day2

    state, project, hosts = _load(ctx, env, limit)
    opts = _opts(project, "100%", max_parallel)
    reporter = _reporter(state)
    _finish(reporter, day2.bootstrap(project, hosts, reporter, opts))


def rollback(
    ctx: typer.Context,
    env: str = EnvArg,
    limit: Optional[str] = LimitOpt,  # noqa: UP045
    to: Optional[str] = typer.Option(None, "--to", help="Release id (default: previous)."),  # noqa: UP045
    batches: Optional[str] = typer.Option(None, "--batches"),  # noqa: UP045
    max_parallel: Optional[int] = typer.Option(None, "--max-parallel"),  # noqa: UP045
) -> None:
    """Back to the previous (or named) release, health-gated like ship."""
    from deployer.deploy import day2

    state, project, hosts = _load(ctx, env, limit)
    opts = _opts(project, batches, max_parallel)
    reporter = _reporter(state)
    _interruptible(opts)
    _finish(reporter, day2.rollback(project, hosts, to, reporter, opts))


def releases(ctx: typer.Context, env: str = EnvArg,
             limit: Optional[str] = LimitOpt) -> None:  # noqa: UP045
    """Releases per host, the current one marked."""
    from deployer.cli.output import out, raw
    from deployer.deploy import day2

    state, project, hosts = _load(ctx, env, limit)
    run, found = day2.releases(project, hosts, _quiet(), _opts(project, "100%"))
    if state.output == "json":
        raw(json.dumps({h: {"current": r.current, "releases": list(r.releases)}
                        for h, r in found.items()}, indent=2))
    else:
        for h in hosts:
            r = found.get(h.name)
            if r is None:
                continue
            out(f"[bold]{h.name}[/bold]")
            for rid in reversed(r.releases):
                out(f"  {'*' if rid == r.current else ' '} {rid}", markup=False)
    _errors_only(run)


def status(ctx: typer.Context, env: str = EnvArg,
           limit: Optional[str] = LimitOpt) -> None:  # noqa: UP045
    """compose ps of every host in one table (service, state, health, image)."""
    from rich.table import Table

    from deployer.cli.output import out, raw
    from deployer.deploy import day2

    state, project, hosts = _load(ctx, env, limit)
    run, rows = day2.status(project, hosts, _quiet(), _opts(project, "100%"))
    if state.output == "json":
        raw(json.dumps({h: [r.__dict__ for r in rs] for h, rs in rows.items()}, indent=2))
    else:
        t = Table(title=f"{project.app} / {env}", title_justify="left")
        for col in ("host", "release", "service", "state", "health", "image"):
            t.add_column(col)
        rel = {r.host: r.release for r in run.hosts}
        for h in hosts:
            for r in rows.get(h.name, []):
                state_txt = r.status + (f" ({r.exit_code})" if r.status == "exited" else "")
                t.add_row(h.name, rel.get(h.name) or "-", r.service, state_txt,
                          r.health or "-", r.image)
        out(t)
    _errors_only(run)


def lock_cmd(ctx: typer.Context, env: str = EnvArg,
             message: str = typer.Option(..., "--message", "-m", help="Why it is locked."),
             limit: Optional[str] = LimitOpt) -> None:  # noqa: UP045
    """Lock deploys (ship and rollback refuse while locked)."""
    from deployer.deploy import day2

    state, project, hosts = _load(ctx, env, limit)
    reporter = _reporter(state)
    _finish(reporter, day2.set_lock(project, hosts, message, reporter, _opts(project, "100%")))


def unlock(ctx: typer.Context, env: str = EnvArg,
           limit: Optional[str] = LimitOpt) -> None:  # noqa: UP045
    """Release the deploy lock."""
    from deployer.deploy import day2

    state, project, hosts = _load(ctx, env, limit)
    reporter = _reporter(state)
    _finish(reporter, day2.unlock(project, hosts, reporter, _opts(project, "100%")))


def _quiet() -> Reporter:
    """Read-only commands print their own table; progress stays quiet."""
    import io

    from deployer.report.reporters import PlainReporter

    return PlainReporter(io.StringIO())


def _errors_only(run: RunReport) -> None:
    from deployer.cli.output import err

    for h in run.hosts:
        if not h.ok:
            err(f"{h.host}: {h.result}: {h.error or h.detail or ''}")
    if not run.ok:
        raise typer.Exit(EXIT_DEPLOY)


def register(app: typer.Typer) -> None:
    app.command()(ship)
    app.command()(bootstrap)
    app.command()(rollback)
    app.command()(releases)
    app.command()(status)
    app.command(name="lock")(lock_cmd)
    app.command()(unlock)
