"""The no-op floor of any Python tool built on paramiko (issue 9's findings).

One Python process imports paramiko, opens one connection per host in
parallel (threads, strict host-key checking against the sandbox's
known_hosts) and runs ``true`` on each. Nothing else: no CLI framework, no
config, no templates. deployer's no-op ship measured against this shows what
deployer itself costs; this measured against ``ssh-floor`` shows what the
interpreter and paramiko cost before any tool does anything.

With ``--stack``, it first imports the rest of the stack the project chose
(typer, whose current releases build pydantic adapters for every option,
jinja2, PyYAML, rich) and parses one option through typer, still doing
nothing with them: the floor of any tool on that stack.

With ``--work FILE`` (the scale bench's work floor, issue 19), FILE maps
each host address to ``[commands, bytes]`` from deployer's ``-o json``
report: per host one connection, the bytes sent on stdin to one ``cat >``
command (when there are any), then ``true`` until the same number of
commands ran, one after the other, as deployer's steps do.

Usage: paramiko_floor.py [--stack] KEY KNOWN_HOSTS USER HOST [HOST ...]
       paramiko_floor.py --work FILE KEY KNOWN_HOSTS USER
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import paramiko


def run(client: paramiko.SSHClient, command: str, data: bytes = b"") -> int:
    chan = client.get_transport().open_session()  # type: ignore[union-attr]
    chan.exec_command(command)
    if data:
        chan.sendall(data)
    chan.shutdown_write()
    while chan.recv(32768):
        pass
    return chan.recv_exit_status()


def one(key: str, known_hosts: str, user: str, host: str, errors: list[str],
        work: tuple[int, int] | None = None) -> None:
    client = paramiko.SSHClient()
    try:
        client.load_host_keys(known_hosts)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(host, username=user, key_filename=key, allow_agent=False,
                       look_for_keys=False, timeout=30)
        commands, size = work or (1, 0)
        if size:
            commands -= 1
            if run(client, "cat > /tmp/work-floor.upload", b"x" * size) != 0:
                errors.append(f"{host}: upload failed")
        for _ in range(max(commands, 0)):
            if run(client, "true") != 0:
                errors.append(f"{host}: true failed")
    except Exception as e:  # reported by the exit code and stderr
        errors.append(f"{host}: {type(e).__name__}: {e}")
    finally:
        client.close()


def load_stack() -> None:
    """Import the chosen stack and run one typer command with one option,
    which is where typer imports pydantic and builds its adapters."""
    import jinja2  # noqa: F401
    import rich.console
    import rich.table  # noqa: F401
    import typer
    import yaml  # noqa: F401

    app = typer.Typer()

    @app.command()
    def noop(limit: str = typer.Option("", "--limit")) -> None:
        pass

    app(["--limit", "x"], standalone_mode=False)


def main(argv: list[str]) -> int:
    work: dict[str, tuple[int, int]] = {}
    if argv and argv[0] == "--stack":
        argv = argv[1:]
        load_stack()
    elif argv and argv[0] == "--work":
        work = {h: (int(c), int(b)) for h, (c, b) in json.loads(Path(argv[1]).read_text()).items()}
        argv = argv[2:]
    key, known_hosts, user, *hosts = argv
    hosts = hosts or list(work)
    errors: list[str] = []
    threads = [threading.Thread(target=one, args=(key, known_hosts, user, h, errors,
                                                  work.get(h)))
               for h in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in errors:
        print(e, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
