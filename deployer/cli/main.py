"""The ``deployer`` command. Parses, calls the API, prints; no deploy logic.

Heavy modules (docker, paramiko, jinja2) are imported inside the commands
that need them, so ``deployer --help`` stays fast.
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from deployer.cli.state import (
    OUTPUT_HELP,
    PROJECT_DIR_HELP,
    VERBOSE_HELP,
    State,
    apply_options,
    get_state,
    with_global_options,
)
from deployer.errors import EXIT_DEPLOY, EXIT_INTERRUPTED, EXIT_USAGE, DeployerError

app = typer.Typer(
    name="deployer",
    help="Ship Docker Compose apps to servers over SSH: build, push, render, upload, "
    "compose up, health-gate, roll back.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

EnvArg = typer.Argument(..., help="Environment: the name of inventories/ENV.yaml.")
LimitOpt = typer.Option(
    None, "--limit", "-l", help="Comma-separated host names, group names or globs."
)


def _version(value: bool) -> None:
    """``--version``: the installed package's version, from its metadata."""
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("deployer")
    except PackageNotFoundError:  # run from a source tree that is not installed
        from deployer import __version__ as v
    typer.echo(f"deployer {v}")
    raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    project_dir: Optional[Path] = typer.Option(  # noqa: UP045
        None, "-C", "--project-dir", help=PROJECT_DIR_HELP, show_default=False
    ),
    output: str = typer.Option("text", "--output", "-o", help=OUTPUT_HELP),
    verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """-C, -o and -v work before or after the command (see deployer.cli.state)."""
    ctx.obj = State(project_dir=Path.cwd().resolve())
    apply_options(ctx.obj, project_dir, output, verbose)


@app.command()
def check(ctx: typer.Context, env: str = EnvArg) -> None:
    """Validate both files and render every template for every host, offline."""
    from deployer.cli import plan_cmd

    plan_cmd.run_check(get_state(ctx), env)


@app.command()
def plan(
    ctx: typer.Context,
    env: str = EnvArg,
    limit: Optional[str] = LimitOpt,  # noqa: UP045 - typer needs Optional on 3.10
    tag: Optional[str] = typer.Option(None, "--tag", help="Image tag (default: from git)."),  # noqa: UP045
    files: bool = typer.Option(True, "--files/--no-files", help="Print rendered files."),
    diff: bool = typer.Option(False, "--diff", help="Read each host (read-only): what a ship "
                              "would change there, and drift."),
    out_dir: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--out", help="Write each host's release folder under DIR/<host>/.",
        metavar="DIR",
    ),
) -> None:
    """Offline dry run: per host, every release file, the data paths and the
    steps ship would run. With --diff, each host is read (never changed): what
    ship would change there."""
    from deployer.cli import plan_cmd

    plan_cmd.run_plan(get_state(ctx), env, limit, tag, files, diff, out_dir)


@app.command()
def init(
    ctx: typer.Context,
    from_compose: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--from-compose", help="Turn an existing compose file into the template."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite existing files."),
) -> None:
    """Scaffold deployer.yaml, inventories/prod.yaml and templates/ here."""
    from deployer.cli.output import out
    from deployer.scaffold import init_project

    written = init_project(get_state(ctx).project_dir, from_compose, force)
    for p in written:
        out(f"created {p}")


@app.command()
def schema(
    which: str = typer.Argument("project", help="project (deployer.yaml) or inventory."),
) -> None:
    """Print the JSON Schema of deployer.yaml or of an inventory (for editors)."""
    import json

    from deployer.cli.output import raw
    from deployer.config.models import InventoryConfig, ProjectConfig

    if which not in ("project", "inventory"):
        raise typer.BadParameter("must be project or inventory", param_hint="WHICH")
    model = ProjectConfig if which == "project" else InventoryConfig
    raw(json.dumps(model.model_json_schema(), indent=2))


PROG = "deployer"
COMPLETE_VAR = "_DEPLOYER_COMPLETE"  # what the completion scripts set to ask for words
COMPLETION_SHELLS = ("bash", "zsh", "fish")


@app.command()
def completion(
    shell: str = typer.Argument(..., help="bash, zsh or fish."),
) -> None:
    """Print the shell completion script for bash, zsh or fish.

    Load it with `source <(deployer completion bash)` in ~/.bashrc, or
    `deployer completion fish > ~/.config/fish/completions/deployer.fish`."""
    if shell not in COMPLETION_SHELLS:
        raise typer.BadParameter(f"must be one of: {', '.join(COMPLETION_SHELLS)}",
                                 param_hint="SHELL")
    # typer's own scripts: each calls back into `deployer` with
    # _DEPLOYER_COMPLETE set, which app() answers with the matching commands
    # and options (so they never go stale).
    from typer._completion_shared import get_completion_script

    from deployer.cli.output import raw

    raw(get_completion_script(prog_name=PROG, complete_var=COMPLETE_VAR, shell=shell))


_registered = False


def _register() -> None:
    """Sub-commands that live in their own modules; then -C/-o/-v on every
    command (they work after the command too). Once per process: tests call
    ``main()`` many times."""
    global _registered
    if _registered:
        return
    _registered = True
    from deployer.cli import day2_cmds, deploy_cmds, images, logs_cmds, proxy_cmds
    from deployer.cli import sandbox as sandbox_cli

    app.command()(images.build)
    app.command()(images.push)
    deploy_cmds.register(app)
    logs_cmds.register(app)
    day2_cmds.register(app)
    app.add_typer(sandbox_cli.app, name="sandbox", help="Local servers and registry to try on.")
    proxy_cmds.register(app)
    for typer_app in (app, sandbox_cli.app, proxy_cmds.app):
        for info in typer_app.registered_commands:
            if info.callback is not None:
                info.callback = with_global_options(info.callback)


def main() -> None:
    """Entry point: maps errors to exit codes, never shows a traceback.

    The cycle collector is kept off the objects of the start-up imports
    (typer, rich, pydantic: they live as long as the process) and off
    everything at exit: a 1-host no-op ship spent about 0.25 s, a fifth of
    its wall time, in the collections of interpreter shutdown alone
    (bench/results/findings.md, issue 19)."""
    try:
        _main()
    finally:
        gc.freeze()


def _main() -> None:
    from deployer.cli.output import err

    _register()
    gc.freeze()
    if COMPLETE_VAR in os.environ:
        # A shell asks for completions (the scripts of `deployer completion`):
        # typer's completion classes, loaded only then so start-up stays fast.
        from typer._completion_classes import completion_init

        completion_init()
    from deployer.report.github import in_github

    github = in_github()
    if github:
        # ::add-mask:: for each secret the moment it is registered, so before
        # anything can print it (deployer/report/github.py).
        from deployer.report.github import enable_masks

        enable_masks()
    try:
        # standalone_mode=False returns the code of a typer.Exit instead of raising
        rc = app(standalone_mode=False, prog_name=PROG, complete_var=COMPLETE_VAR)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except DeployerError as e:
        # markup=False: messages quote YAML (``shared: [PATH]``), not rich tags
        err(f"error: {e.message}", markup=False)
        if e.hint:
            err(f"  hint: {e.hint}", markup=False)
        if github:
            from deployer.report.github import error_annotation

            error_annotation("deployer", e.message + (f"\nhint: {e.hint}" if e.hint else ""))
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        err("aborted")
        sys.exit(EXIT_INTERRUPTED)
    except Exception as e:  # click usage errors and the unexpected
        # typer vendors its own click: recognise its exceptions by shape
        show, code = getattr(e, "show", None), getattr(e, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            sys.exit(code if code else EXIT_USAGE)
        if "-v" in sys.argv or "--verbose" in sys.argv:
            import traceback

            err(traceback.format_exc())  # masked, like everything err() prints
        err(f"internal error: {type(e).__name__}: {e}")
        err("  hint: rerun with -v for the traceback, and please report it")
        sys.exit(EXIT_DEPLOY)
