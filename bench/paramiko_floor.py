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

Usage: paramiko_floor.py [--stack] KEY KNOWN_HOSTS USER HOST [HOST ...]
"""

from __future__ import annotations

import sys
import threading

import paramiko


def one(key: str, known_hosts: str, user: str, host: str, errors: list[str]) -> None:
    client = paramiko.SSHClient()
    try:
        client.load_host_keys(known_hosts)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(host, username=user, key_filename=key, allow_agent=False,
                       look_for_keys=False, timeout=30)
        _, out, _ = client.exec_command("true")
        if out.channel.recv_exit_status() != 0:
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
    if argv and argv[0] == "--stack":
        argv = argv[1:]
        load_stack()
    key, known_hosts, user, *hosts = argv
    errors: list[str] = []
    threads = [threading.Thread(target=one, args=(key, known_hosts, user, h, errors))
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
