"""``logs`` and ``exec``: commands whose output is the point, streamed.

The streams run in :mod:`deployer.deploy.api` over the executor (at most
``max_parallel`` hosts at once); this module prints each line, prefixed by
its host, and hands an interactive ``exec -i`` over to OpenSSH.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING, Optional

import typer

from deployer.errors import EXIT_DEPLOY

if TYPE_CHECKING:
    from deployer.config import Host
    from deployer.report.model import RunReport
    from deployer.report.reporters import Reporter

EnvArg = typer.Argument(..., help="Environment: the name of inventories/ENV.yaml.")
LimitOpt = typer.Option(None, "--limit", "-l", help="Host names, group names or globs.")

_print_lock = threading.Lock()


class _Printer:
    """``host | line`` on stdout, hosts padded to one width, masked."""

    def __init__(self) -> None:
        self.width = 0

    def hosts(self, names: list[str]) -> None:
        self.width = max((len(n) for n in names), default=0)

    def __call__(self, host: str, line: str) -> None:
        from deployer.secrets import mask

        with _print_lock:
            self.width = max(self.width, len(host))
            sys.stdout.write(mask(f"{host.ljust(self.width)} | {line}") + "\n")
            sys.stdout.flush()


def _quiet() -> Reporter:
    import io

    from deployer.report.reporters import PlainReporter

    return PlainReporter(io.StringIO())


def _failures(run: RunReport) -> None:
    from deployer.cli.output import err

    bad = [h for h in run.hosts if not h.ok]
    for h in bad:
        err(f"error: {h.host}: {h.error or h.detail or h.result}")
    if bad:
        raise typer.Exit(EXIT_DEPLOY)


def logs(
    ctx: typer.Context,
    env: str = EnvArg,
    service: Optional[str] = typer.Argument(None, help="One service (default: all)."),  # noqa: UP045
    tail: int = typer.Option(100, "--tail", "-n", help="Lines per service."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep streaming."),
    limit: Optional[str] = LimitOpt,  # noqa: UP045
) -> None:
    """Service logs from every host, each line prefixed by its host."""
    from deployer.cli.state import get_state
    from deployer.deploy import api

    target = api.Target(get_state(ctx).project_dir, env, limit)
    printer = _Printer()
    run = api.logs(target, _quiet(), printer, service=service, tail=tail, follow=follow,
                   on_hosts=printer.hosts)
    if not run.interrupted:
        _failures(run)


def exec_cmd(
    ctx: typer.Context,
    env: str = EnvArg,
    service: str = typer.Argument(..., help="The compose service to run in."),
    command: list[str] = typer.Argument(..., help="The command (after --)."),
    interactive: bool = typer.Option(False, "-i", "--interactive", help="With a TTY."),
    limit: Optional[str] = LimitOpt,  # noqa: UP045
) -> None:
    """Run a command in a service's container on one host (the first match of
    --limit)."""
    from deployer.cli.state import get_state
    from deployer.deploy import api

    target = api.Target(get_state(ctx).project_dir, env, limit)
    host, res = api.exec_in(target, _quiet(), _Printer(), service, command,
                            interactive=interactive)
    _failures(res.report)
    if res.handover is None:
        raise typer.Exit(res.exit_code)
    _handover(host, res.handover)


def _handover(host: Host, line: str) -> None:
    """A real terminal session: hand over to OpenSSH with the same settings
    (strict host keys, the inventory's key and port), as Kamal does."""
    argv = ["ssh", "-t", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={host.ssh.known_hosts_path}"]
    if host.ssh.identity_path:
        argv += ["-i", host.ssh.identity_path, "-o", "IdentitiesOnly=yes"]
    if host.ssh.port:
        argv += ["-p", str(host.ssh.port)]
    if host.ssh.proxy_jump:
        argv += ["-J", host.ssh.proxy_jump]
    target = f"{host.ssh.user}@{host.address}" if host.ssh.user else host.address
    argv += [target, line]  # the remote line was built with shlex by Command.shell
    sys.stdout.flush()
    os.execvp("ssh", argv)  # noqa: S606 - argv is a list


def register(app: typer.Typer) -> None:
    app.command()(logs)
    app.command(name="exec")(exec_cmd)
