"""Options shared by every command (``-C``, ``-o``, ``-v``), before or after it.

The root callback sets them from what comes before the command
(``deployer -C dir ship prod``); :func:`with_global_options` adds the same
three options to every command, so they also work after it
(``deployer ship prod -o json``), as users type them. Given after the
command, an option overrides the same option given before it.

``-C DIR`` acts like ``git -C`` or ``make -C``: every relative path given on
the command line (any parameter typed :class:`~pathlib.Path`) resolves
against ``DIR``.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import typer

OUTPUTS = ("text", "json")
PROJECT_DIR_HELP = "Project folder (holds deployer.yaml); relative paths resolve against it."
OUTPUT_HELP = "text or json."
VERBOSE_HELP = "Debug logs on stderr."


@dataclass
class State:
    project_dir: Path
    output: str = "text"  # text | json
    verbose: bool = False
    project_dir_given: bool = False  # -C was given: relative paths resolve against it


def get_state(ctx: typer.Context) -> State:
    """The shared options, wherever in the command tree ``ctx`` is."""
    root = ctx.find_root()
    obj = root.obj
    if not isinstance(obj, State):
        obj = State(project_dir=Path.cwd())
        root.obj = obj
    return obj


def apply_options(
    state: State, project_dir: Path | None, output: str | None, verbose: bool
) -> None:
    """Set the options that were given (``None``/``False``: not given)."""
    if output is not None:
        if output not in OUTPUTS:
            raise typer.BadParameter("must be text or json", param_hint="--output")
        state.output = output
    if project_dir is not None:
        state.project_dir = project_dir.resolve()
        state.project_dir_given = True
    if verbose and not state.verbose:
        from deployer.logs import setup_logging

        state.verbose = True
        setup_logging(logging.DEBUG)


def resolve_paths(state: State, values: dict[str, Any]) -> None:
    """Relative paths among a command's ``values`` resolve against ``-C``."""
    if not state.project_dir_given:
        return

    def fix(v: Any) -> Any:
        if isinstance(v, Path) and not v.is_absolute():
            return state.project_dir / v
        if isinstance(v, (list, tuple)):
            return type(v)(fix(x) for x in v)
        return v

    for k, v in values.items():
        values[k] = fix(v)


# The names of the parameters with_global_options adds; chosen not to clash
# with any command's own.
_PD, _OUT, _VERB, _CTX = "global_project_dir", "global_output", "global_verbose", "global_ctx"


def with_global_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` as a command that also accepts ``-C``, ``-o`` and ``-v`` (after
    the command name) and whose relative :class:`Path` arguments resolve
    against ``-C``. Typer reads the parameters from the returned function's
    signature."""
    sig = inspect.signature(func, eval_str=True)
    params = list(sig.parameters.values())
    ctx_name = next((p.name for p in params if p.annotation is typer.Context), None)
    added: list[inspect.Parameter] = []
    if ctx_name is None:
        added.append(inspect.Parameter(_CTX, inspect.Parameter.KEYWORD_ONLY,
                                       annotation=typer.Context))
    kw = inspect.Parameter.KEYWORD_ONLY
    added += [
        inspect.Parameter(_PD, kw, annotation=Optional[Path],  # noqa: UP045 - typer on 3.10
                          default=typer.Option(None, "-C", "--project-dir",
                                               help=PROJECT_DIR_HELP, show_default=False)),
        inspect.Parameter(_OUT, kw, annotation=Optional[str],  # noqa: UP045
                          default=typer.Option(None, "--output", "-o", help=OUTPUT_HELP,
                                               show_default=False)),
        inspect.Parameter(_VERB, kw, annotation=bool,
                          default=typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP,
                                               show_default=False)),
    ]

    @functools.wraps(func)
    def command(**kwargs: Any) -> Any:
        project_dir, output, verbose = kwargs.pop(_PD), kwargs.pop(_OUT), kwargs.pop(_VERB)
        ctx = kwargs.pop(_CTX) if ctx_name is None else kwargs[ctx_name]
        state = get_state(ctx)
        apply_options(state, project_dir, output, verbose)
        resolve_paths(state, kwargs)
        return func(**kwargs)

    new_params = params + added
    command.__signature__ = sig.replace(parameters=new_params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in new_params
                               if p.annotation is not inspect.Parameter.empty}
    del command.__wrapped__  # typer must read this signature, not func's
    return command
