"""``ship``, ``bootstrap``, ``rollback`` and the day-2 commands.

Each parses, picks a reporter, calls one function of
:mod:`deployer.deploy.api` and maps the run's result to an exit code: 0 when
every host is fine, 1 when any failed, 130 when interrupted.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any, Optional

import typer

from deployer.cli.state import State, get_state
from deployer.errors import EXIT_DEPLOY, EXIT_INTERRUPTED

if TYPE_CHECKING:
    from deployer.deploy.api import Target
    from deployer.report.model import RunReport
    from deployer.report.reporters import Reporter

EnvArg = typer.Argument(..., help="Environment: the name of inventories/ENV.yaml.")
LimitOpt = typer.Option(None, "--limit", "-l", help="Host names, group names or globs.")


def _target(ctx: typer.Context, env: str, limit: str | None, batches: str | None = None,
            max_parallel: int | None = None) -> tuple[State, Target]:
    from deployer.deploy.api import Target

    state = get_state(ctx)
    return state, Target(state.project_dir, env, limit, batches, max_parallel)


def _reporter(state: State) -> Reporter:
    from deployer.report.reporters import choose_reporter

    return choose_reporter(state.output)


def _exit(run: RunReport) -> None:
    if run.interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
    if not run.ok:
        raise typer.Exit(EXIT_DEPLOY)


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
    from deployer.cli.output import console, in_ci
    from deployer.deploy import api
    from deployer.images.progress import make_reporter

    state, target = _target(ctx, env, limit, batches, max_parallel)
    # rich only for a live display: a pipe or CI gets plain lines without it.
    plain = in_ci() or not (sys.stderr.isatty() or os.environ.get("FORCE_TERMINAL"))
    progress = make_reporter(None if plain else console(True), plain=plain,
                             verbose=state.verbose)
    _exit(api.ship(target, lambda: _reporter(state), tag=tag, skip_build=skip_build,
                   progress=progress))


def bootstrap(
    ctx: typer.Context,
    env: str = EnvArg,
    limit: Optional[str] = LimitOpt,  # noqa: UP045
    max_parallel: Optional[int] = typer.Option(None, "--max-parallel"),  # noqa: UP045
) -> None:
    """Install Docker and compose where missing (idempotent)."""
    from deployer.deploy import api

    state, target = _target(ctx, env, limit, None, max_parallel)
    _exit(api.bootstrap(target, _reporter(state)))


def rollback(
    ctx: typer.Context,
    env: str = EnvArg,
    limit: Optional[str] = LimitOpt,  # noqa: UP045
    to: Optional[str] = typer.Option(None, "--to", help="Release id (default: previous)."),  # noqa: UP045
    batches: Optional[str] = typer.Option(None, "--batches"),  # noqa: UP045
    max_parallel: Optional[int] = typer.Option(None, "--max-parallel"),  # noqa: UP045
) -> None:
    """Back to the previous (or named) release, health-gated like ship."""
    from deployer.deploy import api

    state, target = _target(ctx, env, limit, batches, max_parallel)
    _exit(api.rollback(target, _reporter(state), to))


def releases(ctx: typer.Context, env: str = EnvArg,
             limit: Optional[str] = LimitOpt) -> None:  # noqa: UP045
    """Releases per host, the current one marked, each with whether it passed
    its health gate (passed, failed, never ran, unknown)."""
    from deployer.cli.output import out, raw
    from deployer.deploy import api

    state, target = _target(ctx, env, limit)
    run, found = api.releases(target, _quiet())
    if state.output == "json":
        raw(json.dumps({h: {"current": r.current, "releases": list(r.releases),
                            "health": {rid: r.health(rid) for rid in r.releases}}
                        for h, r in found.items()}, indent=2))
    else:
        for h in run.hosts:
            r = found.get(h.host)
            if r is None:
                continue
            out(f"[bold]{h.host}[/bold]")
            for rid in reversed(r.releases):
                out(f"  {'*' if rid == r.current else ' '} {rid}  {r.health(rid)}",
                    markup=False)
    _errors_only(run)


def status(ctx: typer.Context, env: str = EnvArg,
           limit: Optional[str] = LimitOpt) -> None:  # noqa: UP045
    """compose ps of every host in one table (service, state, health, image)."""
    from deployer.cli.output import console, out, raw
    from deployer.cli.tables import status_table
    from deployer.deploy import api

    state, target = _target(ctx, env, limit)
    proxies: dict[str, Any] = {}  # each route's upstreams and health (cli/proxy_cmds.py)
    run, rows = api.status(target, _quiet(), proxies)
    if state.output == "json":
        raw(json.dumps({h: [r.__dict__ for r in rs] for h, rs in rows.items()}, indent=2))
    else:
        out(status_table(f"{run.app} / {env}", [h.host for h in run.hosts], rows,
                         {r.host: r.release for r in run.hosts}, console().width))
        if proxies:
            from deployer.cli.proxy_cmds import print_status

            out("")
            print_status(proxies, [h.host for h in run.hosts])
    _errors_only(run)


def lock_cmd(ctx: typer.Context, env: str = EnvArg,
             message: str = typer.Option(..., "--message", "-m", help="Why it is locked."),
             limit: Optional[str] = LimitOpt) -> None:  # noqa: UP045
    """Lock deploys (ship and rollback refuse while locked)."""
    from deployer.deploy import api

    state, target = _target(ctx, env, limit)
    _exit(api.lock(target, _reporter(state), message))


def unlock(ctx: typer.Context, env: str = EnvArg,
           limit: Optional[str] = LimitOpt) -> None:  # noqa: UP045
    """Release the deploy lock."""
    from deployer.deploy import api

    state, target = _target(ctx, env, limit)
    _exit(api.unlock(target, _reporter(state)))


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
