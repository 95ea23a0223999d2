"""Printing: one console for results, one for errors, everything masked."""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from deployer.secrets import mask

if TYPE_CHECKING:
    from rich.console import Console


def in_ci() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true" or os.environ.get("CI") == "true"


@lru_cache(maxsize=2)
def console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(
        stderr=stderr,
        highlight=False,
        no_color=in_ci() or "NO_COLOR" in os.environ,
        soft_wrap=True,
    )


def out(text: Any = "", **kw: Any) -> None:
    """Print to stdout; strings are masked, rich renderables are printed as is
    (build them from masked strings)."""
    console().print(mask(text) if isinstance(text, str) else text, **kw)


def err(text: str, **kw: Any) -> None:
    console(True).print(mask(text), **kw)


def raw(text: str) -> None:
    """Plain stdout, no markup (JSON, file contents), masked."""
    sys.stdout.write(mask(text))
    if not text.endswith("\n"):
        sys.stdout.write("\n")
    sys.stdout.flush()
