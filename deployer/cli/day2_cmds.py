"""``deployer audit ENV`` (the hosts' audit logs, merged, newest first) and
``deployer prune ENV`` (images no kept release uses)."""

from __future__ import annotations

from typing import Any, Optional

import typer

from deployer.cli.deploy_cmds import (
    EnvArg,
    LimitOpt,
    _errors_only,
    _exit,
    _quiet,
    _reporter,
    _target,
)

COLUMNS = ("time", "host", "action", "result", "release", "user", "commit", "duration",
           "detail")


def _cell(entry: dict[str, Any], key: str) -> str:
    v = entry.get(key)
    if v is None:
        return "-"
    if key == "commit":
        return str(v)[:12] + ("+dirty" if str(v).endswith("+dirty") else "")
    if key == "duration":
        return f"{float(v):.1f}s"
    return str(v)


def audit(
    ctx: typer.Context,
    env: str = EnvArg,
    limit: Optional[str] = LimitOpt,  # noqa: UP045
    since: Optional[str] = typer.Option(  # noqa: UP045
        None, "--since", help="e.g. 2h, 7d or 2026-12-01T10:00Z (UTC)."),
    lines: int = typer.Option(100, "--lines", "-n", help="At most this many entries."),
) -> None:
    """Who shipped, rolled back, locked, unlocked, pruned or exec'd what,
    where and when: every targeted host's audit.log, newest first."""
    from deployer.cli.output import out, raw_json
    from deployer.deploy import api

    state, target = _target(ctx, env, limit)
    run, entries = api.audit(target, _quiet(), since=since, lines=lines)
    if state.output == "json":
        raw_json(entries)
    else:
        # One line per entry (a 9-column table folds to nothing in 80 columns):
        # the short columns aligned, release, user, commit, detail after them.
        rows = [[_cell(e, c) for c in COLUMNS] for e in entries]
        widths = [max((len(r[i]) for r in rows), default=0) for i in range(4)]
        out(f"audit {run.app} / {env}: {len(rows)} entries, newest first", markup=False)
        for r in rows:
            head = "  ".join(v.ljust(w) for v, w in zip(r[:4], widths, strict=True))
            detail = f"  {r[8]}" if r[8] != "-" else ""
            out(f"{head}  {r[4]}  by {r[5]}  commit {r[6]}  {r[7]}{detail}", markup=False)
    _errors_only(run)


def prune(ctx: typer.Context, env: str = EnvArg,
          limit: Optional[str] = LimitOpt) -> None:  # noqa: UP045
    """Remove the app's images and stopped containers that no kept release
    uses (ship does this after each switch)."""
    from deployer.deploy import api

    state, target = _target(ctx, env, limit)
    _exit(api.prune(target, _reporter(state)))


def register(app: typer.Typer) -> None:
    app.command()(audit)
    app.command()(prune)
