"""What the image stage shows while it works: a line per build step and a bar
per layer on push or pull (rich, on a terminal), or plain lines (CI, pipes).

The stage talks to an :class:`ImageReporter`; anything with these methods
works (the ship command can forward them to its own event stream). Every text
goes through the secret masker, because build output may echo build args.
"""

from __future__ import annotations

import os
import sys
from typing import IO, Any, Protocol

from ..secrets import mask

# Layer states after which nothing more happens to the layer.
LAYER_DONE = frozenset(
    {"Pushed", "Layer already exists", "Pull complete", "Already exists", "Download complete"}
)


class ImageReporter(Protocol):
    def start(self, image: str, action: str, ref: str) -> None:
        """``action`` (build, push, pull, mirror) of ``image`` as ``ref`` begins."""

    def step(self, image: str, text: str) -> None:
        """A build step began (``Step 2/5 : RUN ...``)."""

    def output(self, image: str, line: str) -> None:
        """A line a build step printed."""

    def layer(
        self, image: str, layer: str, status: str, current: int | None, total: int | None
    ) -> None:
        """A layer's push or pull status; ``current``/``total`` in bytes when known."""

    def note(self, image: str, text: str) -> None:
        """Something worth one line (``already in registry``, ``using local image``)."""

    def done(self, image: str, text: str) -> None:
        """The action finished; ``text`` is the outcome (an id, a pinned ref)."""

    def close(self) -> None:
        """Stop any live display."""


class PlainImageReporter:
    """Plain lines: for CI logs, pipes and tests. Layer progress is shown as
    state changes (no byte counts), so logs stay short and deterministic."""

    def __init__(self, stream: IO[str] | None = None, verbose: bool = False) -> None:
        self.stream = stream
        self.verbose = verbose
        self._layer_state: dict[tuple[str, str], str] = {}

    def _print(self, image: str, text: str) -> None:
        out = self.stream or sys.stderr
        out.write(mask(f"[{image}] {text}") + "\n")
        out.flush()

    def start(self, image: str, action: str, ref: str) -> None:
        self._print(image, f"{action} {ref}")

    def step(self, image: str, text: str) -> None:
        self._print(image, text)

    def output(self, image: str, line: str) -> None:
        if self.verbose:
            self._print(image, f"  | {line}")

    def layer(
        self, image: str, layer: str, status: str, current: int | None, total: int | None
    ) -> None:
        key = (image, layer)
        if self._layer_state.get(key) == status:
            return
        self._layer_state[key] = status
        self._print(image, f"layer {layer}: {status}")

    def note(self, image: str, text: str) -> None:
        self._print(image, text)

    def done(self, image: str, text: str) -> None:
        self._print(image, f"done: {text}")

    def close(self) -> None:
        pass


class RichReporter:
    """A terminal display: each build step printed as a line, and a live bar
    per layer while pushing or pulling."""

    def __init__(self, console: Any = None, verbose: bool = False) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.verbose = verbose
        self._progress: Any = None
        self._tasks: dict[tuple[str, str], Any] = {}

    def _line(self, image: str, text: str, style: str = "") -> None:
        from rich.text import Text

        line = Text(f"[{image}] ", style="bold cyan")
        line.append(mask(text), style=style)
        (self._progress.console if self._progress else self.console).print(line)

    def _bars(self) -> Any:
        if self._progress is None:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TextColumn("{task.fields[status]}"),
                console=self.console,
                transient=True,
            )
            self._progress.start()
        return self._progress

    def _stop_bars(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._tasks.clear()

    def start(self, image: str, action: str, ref: str) -> None:
        self._line(image, f"{action} {ref}", "bold")

    def step(self, image: str, text: str) -> None:
        self._line(image, text)

    def output(self, image: str, line: str) -> None:
        if self.verbose:
            self._line(image, f"  | {line}", "dim")

    def layer(
        self, image: str, layer: str, status: str, current: int | None, total: int | None
    ) -> None:
        bars = self._bars()
        key = (image, layer)
        task = self._tasks.get(key)
        if task is None:
            from rich.markup import escape

            task = bars.add_task(escape(f"[{image}] {layer}"), total=None, status=status)
            self._tasks[key] = task
        if status in LAYER_DONE:
            t = next(t for t in bars.tasks if t.id == task)
            bars.update(task, total=t.total or 1, completed=t.total or 1, status=escape_(status))
        else:
            bars.update(task, total=total or None, completed=current or 0, status=escape_(status))

    def note(self, image: str, text: str) -> None:
        self._line(image, text, "yellow")

    def done(self, image: str, text: str) -> None:
        self._stop_bars()
        self._line(image, f"done: {text}", "green")

    def close(self) -> None:
        self._stop_bars()


def escape_(text: str) -> str:
    from rich.markup import escape

    return escape(mask(text))


def make_reporter(
    console: Any = None, *, plain: bool | None = None, verbose: bool = False
) -> ImageReporter:
    """Rich on an interactive terminal, plain in CI (``CI`` set) or a pipe."""
    if plain is None:
        plain = bool(os.environ.get("CI")) or not sys.stderr.isatty()
    if plain:
        stream = getattr(console, "file", None) if console is not None else None
        return PlainImageReporter(stream, verbose=verbose)
    return RichReporter(console, verbose=verbose)
