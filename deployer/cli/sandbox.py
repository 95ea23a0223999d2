"""``deployer sandbox up|status|down``: local servers and a registry to try on.

Progress goes to stderr, the result to stdout (a table, or JSON with
``-o json``). Errors propagate as :class:`~deployer.errors.DeployerError`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from deployer.cli.state import get_state

if TYPE_CHECKING:
    from deployer.sandbox.manager import SandboxInfo

app = typer.Typer(
    name="sandbox",
    help="Local servers (systemd + sshd containers) and a TLS registry on the Docker engine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _progress(msg: str) -> None:
    from deployer.cli.output import err

    err(f"  {msg}", markup=False, style="dim")


def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def _as_json(info: SandboxInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "project": str(info.project_dir),
        "network": info.network,
        "subnet": info.subnet,
        "registry": {
            "server": info.registry.server,
            "username": info.registry.username,
            "ca_cert": str(info.registry.ca_cert),
            "container": info.registry.container,
            "state": info.registry.state,
        },
        "hosts": [
            {
                "name": h.name,
                "address": h.address,
                "container": h.container,
                "state": h.state,
                "image": h.image,
            }
            for h in info.hosts
        ],
        "ssh_user": info.ssh_user,
        "ssh_key": str(info.ssh_key),
        "known_hosts": str(info.known_hosts),
        "inventory": str(info.inventory),
    }


def _show(info: SandboxInfo, *, output: str) -> None:
    from rich.table import Table

    from deployer.cli.output import out, raw

    if output == "json":
        raw(json.dumps(_as_json(info), indent=2))
        return
    table = Table(title=None, show_edge=False, pad_edge=False, box=None, header_style="bold")
    for col in ("host", "address", "container", "state"):
        table.add_column(col)
    for h in info.hosts:
        table.add_row(h.name, h.address, h.container, h.state)
    table.add_row("(registry)", info.registry.server, info.registry.container, info.registry.state)
    out(table)
    base = info.project_dir
    out(
        f"registry {info.registry.server}  user {info.registry.username}  "
        f"password in {_rel(info.sandbox_dir / 'registry.env', base)}",
        markup=False,
    )
    out(
        f"inventory {_rel(info.inventory, base)}  network {info.network} ({info.subnet})",
        markup=False,
    )
    if info.hosts:
        h = info.hosts[0]
        out(
            f"ssh: ssh -i {_rel(info.ssh_key, base)}"
            f" -o UserKnownHostsFile={_rel(info.known_hosts, base)}"
            f" -o StrictHostKeyChecking=yes {info.ssh_user}@{h.address}",
            markup=False,
        )


@app.command()
def up(
    ctx: typer.Context,
    hosts: int = typer.Option(
        2, "--hosts", "-n", min=0, help="How many hosts (adds, never removes)."
    ),
    base_image: Optional[str] = typer.Option(  # noqa: UP045 - typer needs Optional on 3.10
        None,
        "--base-image",
        help="Any apt-based image for the hosts [default: $DEPLOYER_SANDBOX_BASE_IMAGE or "
        "ubuntu:24.04].",
    ),
    with_docker: Optional[bool] = typer.Option(  # noqa: UP045
        None, "--with-docker/--without-docker", help="Hosts with Docker already installed."
    ),
    cap_mode: Optional[str] = typer.Option(  # noqa: UP045
        None,
        "--cap-mode",
        help="caps (all capabilities but SYS_RESOURCE, the default) or privileged.",
    ),
    subnet: Optional[str] = typer.Option(  # noqa: UP045
        None, "--subnet", help="The sandbox network [default: first free /24 from 10.213.0.0/24]."
    ),
    registry_image: Optional[str] = typer.Option(  # noqa: UP045
        None, "--registry-image", help="Registry image with registry:2's interface."
    ),
) -> None:
    """Start (or complete) the sandbox: N hosts with sshd and systemd, a TLS registry,
    and inventories/sandbox.yaml pointing at them."""
    from deployer.cli.output import err
    from deployer.errors import ConfigError
    from deployer.sandbox import manager

    if cap_mode is not None and cap_mode not in manager.CAP_MODES:
        raise ConfigError(
            f"--cap-mode: unknown mode {cap_mode!r}", f"use one of: {', '.join(manager.CAP_MODES)}"
        )
    state = get_state(ctx)
    err(f"sandbox up in {state.project_dir}", markup=False)
    info = manager.up(
        state.project_dir,
        hosts=hosts,
        base_image=base_image,
        with_docker=with_docker,
        cap_mode=cap_mode,
        subnet=subnet,
        registry_image=registry_image,
        log=_progress,
    )
    _show(info, output=state.output)
    if state.output != "json":
        from deployer.cli.output import out

        out("next: deployer ship sandbox", markup=False)


@app.command()
def status(ctx: typer.Context) -> None:
    """Show the sandbox's hosts and registry as the engine sees them now."""
    from deployer.cli.output import out, raw
    from deployer.sandbox import manager

    state = get_state(ctx)
    info = manager.status(state.project_dir)
    if info is None:
        if state.output == "json":
            raw("null")
        else:
            out("no sandbox in this project (deployer sandbox up makes one)", markup=False)
        return
    _show(info, output=state.output)


@app.command()
def down(ctx: typer.Context) -> None:
    """Remove everything the sandbox made (containers, network, volumes, keys); safe twice."""
    from deployer.cli.output import out, raw
    from deployer.sandbox import manager

    state = get_state(ctx)
    n = manager.down(state.project_dir, log=_progress)
    if state.output == "json":
        raw(json.dumps({"removed": n}))
    else:
        out(f"sandbox down: removed {n} containers, networks and volumes", markup=False)
