"""Options shared by every command, set by the main callback (``-C``, ``--output``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer


@dataclass
class State:
    project_dir: Path
    output: str = "text"  # text | json
    verbose: bool = False


def get_state(ctx: typer.Context) -> State:
    """The shared options, wherever in the command tree ``ctx`` is."""
    root = ctx.find_root()
    obj = root.obj
    if not isinstance(obj, State):
        obj = State(project_dir=Path.cwd())
        root.obj = obj
    return obj
