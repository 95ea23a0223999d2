"""``deployer maintenance ENV on|off`` and ``deployer proxy
status|logs|restart|upgrade ENV``: parse, call :mod:`deployer.deploy.api`,
print. The work is in :mod:`deployer.proxy.maintenance` and
:mod:`deployer.proxy.ops`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

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

if TYPE_CHECKING:
    from deployer.proxy.ops import ProxyStatus

app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                  help="The edge proxy on each host: status, logs, restart, upgrade.")


def maintenance(
    ctx: typer.Context,
    env: str = EnvArg,
    mode: str = typer.Argument(..., metavar="on|off",
                               help="on: the app's routes answer 503 with a page; off: "
                               "they are routed to the app again."),
    message: Optional[str] = typer.Option(  # noqa: UP045
        None, "--message", "-m", help="The text of the page (with on)."),
    limit: Optional[str] = LimitOpt,  # noqa: UP045
) -> None:
    """Answer every request for this app with a 503 page (on), or route them
    to the app again (off). Other apps on the same proxy are not touched;
    a ship while it is on keeps the page up."""
    from deployer.deploy import api

    if mode not in ("on", "off"):
        raise typer.BadParameter("must be on or off", param_hint="on|off")
    state, target = _target(ctx, env, limit)
    _exit(api.maintenance(target, _reporter(state), mode == "on", message))


def _upstream_line(u: Any) -> str:
    health = {True: "healthy", False: "unhealthy", None: "unknown"}[u.healthy]
    return f"      {u.address}  {health}  {u.num_requests} in flight  {u.fails} failed"


def print_status(found: dict[str, ProxyStatus], hosts: list[str]) -> None:
    from deployer.cli.output import out

    for h in hosts:
        s = found.get(h)
        if s is None:
            continue
        image = f" {s.image}" if s.image else ""
        if s.up_to_date is False:
            image += f" (out of date: the current release names {s.configured}; " \
                     "`deployer proxy upgrade` upgrades it)"
        out(f"{h}: proxy {s.container}{image}", markup=False)
        if s.maintenance:
            m = s.maintenance
            out(f"  maintenance on since {m.get('when') or '?'} by {m.get('who') or '?'}: "
                f"{m.get('message')}", markup=False)
        for r in s.routes:
            out(f"  route {r.service} ({r.match}): {r.health()}", markup=False)
            for u in r.upstreams:
                out(_upstream_line(u), markup=False)
        if s.other_routes:
            out(f"  other projects' routes on this proxy: {s.other_routes}", markup=False)


def status(ctx: typer.Context, env: str = EnvArg,
           limit: Optional[str] = LimitOpt) -> None:  # noqa: UP045
    """Per host: the proxy container and its image, and each of the app's
    routes with its upstreams, their health and requests in flight."""
    from deployer.cli.output import raw_json
    from deployer.deploy import api

    state, target = _target(ctx, env, limit)
    run, found = api.proxy_status(target, _quiet())
    if state.output == "json":
        raw_json({h: s.data() for h, s in found.items()})
    else:
        print_status(found, [h.host for h in run.hosts])
    _errors_only(run)


def logs(
    ctx: typer.Context,
    env: str = EnvArg,
    lines: int = typer.Option(100, "--lines", "-n", help="Lines from the end of each log."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep streaming."),
    limit: Optional[str] = LimitOpt,  # noqa: UP045
) -> None:
    """The proxy container's logs from every host, each line prefixed by its host."""
    from deployer.cli.logs_cmds import _failures, _Printer
    from deployer.deploy import api

    _state, target = _target(ctx, env, limit)
    printer = _Printer()
    run = api.proxy_logs(target, _quiet(), printer, tail=lines, follow=follow,
                         on_hosts=printer.hosts)
    if not run.interrupted:
        _failures(run)


def restart(ctx: typer.Context, env: str = EnvArg,
            limit: Optional[str] = LimitOpt) -> None:  # noqa: UP045
    """Restart the proxy container, one host at a time. Users of every app on
    the host see a short gap: new connections are refused for a moment and
    requests in flight are cut after a few seconds."""
    from deployer.cli.output import err
    from deployer.deploy import api
    from deployer.proxy.ops import RESTART_SEES

    state, target = _target(ctx, env, limit)
    err(f"proxy restart, one host at a time: {RESTART_SEES}")
    _exit(api.proxy_restart(target, _reporter(state)))


def upgrade(
    ctx: typer.Context,
    env: str = EnvArg,
    tag: Optional[str] = typer.Option(None, "--tag", help="Tag for a mirrored proxy image "  # noqa: UP045
                                      "(default: from git)."),
    limit: Optional[str] = LimitOpt,  # noqa: UP045
) -> None:
    """Pull (or mirror) the configured proxy image and recreate the proxy with
    it, one host at a time; its config and certificates are kept. Users of
    every app on the host see a gap of a few seconds (a ship never does this)."""
    from deployer.cli.output import err
    from deployer.deploy import api
    from deployer.proxy.ops import UPGRADE_SEES

    state, target = _target(ctx, env, limit)
    err(f"proxy upgrade, one host at a time: {UPGRADE_SEES}")
    _exit(api.proxy_upgrade(target, _reporter(state), tag=tag,
                            on_image=lambda ref: err(f"proxy image: {ref}")))


def register(root: typer.Typer) -> None:
    root.command()(maintenance)
    app.command()(status)
    app.command()(logs)
    app.command()(restart)
    app.command()(upgrade)
    root.add_typer(app, name="proxy", help="The edge proxy on each host: status, logs, "
                   "restart, upgrade.")
