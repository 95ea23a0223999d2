"""``logs`` and ``exec``: commands whose output is the point, streamed."""

from __future__ import annotations

import os
import shlex
import sys
import threading
from typing import TYPE_CHECKING, Optional

import typer

from deployer.errors import EXIT_DEPLOY, ConfigError

if TYPE_CHECKING:
    from deployer.commands.compose import Compose
    from deployer.config import Host, Project
    from deployer.remote.executor import SSHExecutor

EnvArg = typer.Argument(..., help="Environment: the name of inventories/ENV.yaml.")
LimitOpt = typer.Option(None, "--limit", "-l", help="Host names, group names or globs.")

_print_lock = threading.Lock()


def _emit(host: str, line: str, width: int) -> None:
    from deployer.secrets import mask

    with _print_lock:
        sys.stdout.write(mask(f"{host.ljust(width)} | {line}") + "\n")
        sys.stdout.flush()


def _compose_for(ex: SSHExecutor, project: Project) -> Compose:
    from deployer.commands import release
    from deployer.commands.compose import Compose
    from deployer.deploy.bootstrap import probe

    facts = probe(ex)
    st = release.parse_state(ex.run(release.read_state(project.deploy_dir)).stdout)
    if not st.current:
        raise ConfigError(f"{ex.host}: no release deployed yet", "run `deployer ship` first")
    return Compose(project.app, project.config.compose_file, facts.compose or "v2",
                   facts.docker_sudo, release.release_dir(project.deploy_dir, st.current))


def _stream(ex: SSHExecutor, line: str, host: str, width: int) -> int:
    """Run ``line`` and print its output line by line as it arrives."""
    conn = ex.connect()
    chan = conn.transport.open_session()
    chan.set_combine_stderr(True)
    chan.exec_command(line)
    buf = b""
    while True:
        data = chan.recv(32768)
        if not data:
            break
        buf += data
        *lines, buf = buf.split(b"\n")
        for raw in lines:
            _emit(host, raw.decode("utf-8", "replace"), width)
    if buf:
        _emit(host, buf.decode("utf-8", "replace"), width)
    return chan.recv_exit_status()


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
    from deployer.config import load_project
    from deployer.remote.executor import SSHExecutor

    project = load_project(get_state(ctx).project_dir, env)
    hosts = project.select(limit)
    width = max(len(h.name) for h in hosts)
    failures: list[str] = []

    def one(h: Host) -> None:
        from deployer.errors import DeployerError

        try:
            with SSHExecutor(h) as ex:
                compose = _compose_for(ex, project)
                cmd = compose.logs(service, tail=tail, follow=follow)
                code = _stream(ex, cmd.shell(as_root=ex.as_root), h.name, width)
                if code != 0:
                    failures.append(f"{h.name}: compose logs exited {code}")
        except DeployerError as e:
            failures.append(e.message)

    threads = [threading.Thread(target=one, args=(h,), daemon=True) for h in hosts]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    except KeyboardInterrupt:
        return
    from deployer.cli.output import err

    for f in failures:
        err(f"error: {f}")
    if failures:
        raise typer.Exit(EXIT_DEPLOY)


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
    from deployer.config import load_project
    from deployer.remote.executor import SSHExecutor

    project = load_project(get_state(ctx).project_dir, env)
    host = project.select(limit)[0]
    with SSHExecutor(host) as ex:
        compose = _compose_for(ex, project)
        cmd = compose.exec(service, command, interactive=interactive)
        line = cmd.shell(as_root=ex.as_root)
        if not interactive:
            code = _stream(ex, line, host.name, len(host.name))
            raise typer.Exit(code)
    # A real terminal session: hand over to OpenSSH with the same settings
    # (strict host keys, the inventory's key and port), as Kamal does.
    argv = ["ssh", "-t", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={host.ssh.known_hosts_path}"]
    if host.ssh.identity_path:
        argv += ["-i", host.ssh.identity_path, "-o", "IdentitiesOnly=yes"]
    if host.ssh.port:
        argv += ["-p", str(host.ssh.port)]
    if host.ssh.proxy_jump:
        argv += ["-J", host.ssh.proxy_jump]
    target = f"{host.ssh.user}@{host.address}" if host.ssh.user else host.address
    argv += [target, line]
    sys.stdout.flush()
    os.execvp("ssh", argv)  # noqa: S606 - argv is a list; the remote line is shlex-quoted
    _ = shlex  # keep the import explicit: the remote line was built with shlex


def register(app: typer.Typer) -> None:
    app.command()(logs)
    app.command(name="exec")(exec_cmd)
