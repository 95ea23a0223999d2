"""Printing: one console for results, one for errors, everything masked.

Values (host names, remote stderr, error text) can hold anything, including
rich markup (``[/]``, ``[/data]``) and lone surrogates, so:

- :func:`err` and :func:`raw` never interpret markup;
- :func:`out` interprets markup only in the text its caller wrote: callers
  put values in through :func:`esc`, and a markup error still prints the
  line as plain text instead of raising;
- text that cannot be encoded is written with backslash escapes;
- nothing here raises: printing the error of a failed command must not fail.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from deployer.secrets import mask

if TYPE_CHECKING:
    from rich.console import Console


def in_ci() -> bool:
    from deployer.report.github import in_github

    return in_github() or os.environ.get("CI") == "true"


@lru_cache(maxsize=2)
def console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(
        stderr=stderr,
        highlight=False,
        no_color=in_ci() or "NO_COLOR" in os.environ,
        soft_wrap=True,
    )


def printable(text: str) -> str:
    """``text`` with what no stream can encode (lone surrogates) as ``\\udcxx``."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def esc(value: Any) -> str:
    """A value made safe to put into a markup string given to :func:`out`."""
    from rich.markup import escape

    return escape(printable(str(value)))


def _fallback(stream: Any, text: str) -> None:
    try:
        stream.write(printable(mask(text)) + "\n")
        stream.flush()
    except Exception:  # noqa: S110 - a closed stream: nothing left to tell
        pass


def _print(c: Console, text: Any, kw: dict[str, Any]) -> None:
    if isinstance(text, str):
        text = printable(mask(text))
    try:
        c.print(text, **kw)
    except Exception:
        # A markup error in a value that was not escaped, an encoding error:
        # print the text as it is rather than lose the message.
        if isinstance(text, str) and kw.get("markup") is not False:
            try:
                c.print(text, **{**kw, "markup": False})
                return
            except Exception:  # noqa: S110 - fall through to the plain write
                pass
        _fallback(c.file, text if isinstance(text, str) else repr(text))


def out(text: Any = "", **kw: Any) -> None:
    """Print to stdout; strings are masked and may hold markup (put values in
    with :func:`esc`), rich renderables are printed as is (build them from
    masked, escaped strings)."""
    _print(console(), text, kw)


def err(text: str, **kw: Any) -> None:
    """Print to stderr, masked, markup not interpreted unless ``markup=True``."""
    kw.setdefault("markup", False)
    _print(console(True), text, kw)


def raw(text: str) -> None:
    """Plain stdout, no markup (file contents), masked."""
    text = printable(mask(text))
    sys.stdout.write(text)
    if not text.endswith("\n"):
        sys.stdout.write("\n")
    sys.stdout.flush()


def raw_json(data: Any, indent: int | None = 2) -> None:
    """``data`` as JSON on stdout, every string in it masked BEFORE it is
    serialised (masking the JSON text afterwards would miss a secret that
    ``json.dumps`` escaped, and could break the JSON)."""
    from deployer.secrets import dumps_masked

    sys.stdout.write(dumps_masked(data, indent=indent) + "\n")
    sys.stdout.flush()
