"""``deployer build ENV`` and ``deployer push ENV``: the image stage on its own.

The lead registers these with ``app.command()(build)``. Progress goes to
stderr; the result (image refs) to stdout, as text or JSON (``-o json``).
Errors propagate as :class:`~deployer.errors.DeployerError` for ``main`` to
print as one line and map to an exit code.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Optional

import typer

from deployer.cli.state import State, get_state

if TYPE_CHECKING:
    from deployer.config import Project
    from deployer.images.progress import ImageReporter

EnvArg = typer.Argument(..., help="Environment: the name of inventories/ENV.yaml.")
TagOpt = typer.Option(
    None, "--tag", help="Image tag (default: the git short sha, -dirty-<hash> if changed)."
)


def _setup(
    ctx: typer.Context, env: str, tag: str | None
) -> tuple[State, Project, str, ImageReporter]:
    from deployer.cli.output import console, in_ci
    from deployer.config import load_project
    from deployer.images.progress import make_reporter
    from deployer.tags import project_tag

    state = get_state(ctx)
    project = load_project(state.project_dir, env)
    tag = tag or project_tag(project.root)
    err_console = console(True)
    plain = in_ci() or not err_console.is_terminal
    reporter = make_reporter(err_console, plain=plain, verbose=state.verbose)
    return state, project, tag, reporter


def _print(state: State, tag: str, refs: dict[str, str]) -> None:
    from deployer.cli.output import out, raw

    if state.output == "json":
        raw(json.dumps({"tag": tag, "images": refs}, indent=2))
        return
    for name, ref in refs.items():
        out(f"{name}: {ref}", markup=False)


def build(
    ctx: typer.Context,
    env: str = EnvArg,
    tag: Optional[str] = TagOpt,  # noqa: UP045 - typer needs Optional on 3.10
) -> None:
    """Build every image of deployer.yaml (and prepare mirrors) in the local engine."""
    from deployer.images.refs import image_ref
    from deployer.images.stage import build_images

    state, project, tag, reporter = _setup(ctx, env, tag)
    build_images(project, tag, reporter)
    server = project.registry.server
    images = project.config.images
    _print(state, tag, {n: image_ref(server, i.repository, tag) for n, i in images.items()})


def push(
    ctx: typer.Context,
    env: str = EnvArg,
    tag: Optional[str] = TagOpt,  # noqa: UP045 - typer needs Optional on 3.10
) -> None:
    """Push the built images to the registry; prints each pinned reference."""
    from deployer.images.stage import push_images

    state, project, tag, reporter = _setup(ctx, env, tag)
    refs = push_images(project, tag, reporter)
    _print(state, tag, refs)
