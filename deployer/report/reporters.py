"""Progress while a run goes on, and the summary at its end.

Every reporter gets the same events from the deploy layer (which never
prints): a batch starts, a host enters a step, a host logs a line, a host
finishes. All text passes through the masker.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Protocol

from deployer.report.model import HostReport, RunReport
from deployer.secrets import dumps_masked, mask

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


class Reporter(Protocol):
    def start(self, hosts: list[str], batches: list[int]) -> None: ...
    def batch(self, no: int, hosts: list[str]) -> None: ...
    def step(self, host: str, step: str) -> None: ...
    def log(self, host: str, line: str) -> None: ...
    def host_done(self, report: HostReport) -> None: ...
    def finish(self, run: RunReport) -> None: ...


RESULT_STYLE = {
    "deployed": "green",
    "unchanged": "cyan",
    "ok": "green",
    "failed": "bold red",
    "rolled back": "yellow",
    "skipped": "dim",
}


def summary_table(run: RunReport) -> Table:
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=escape(mask(f"{run.command} {run.app} -> {run.env}")), title_justify="left")
    t.add_column("host")
    t.add_column("result", no_wrap=True)
    # Folded, never cut: what tells releases apart is at the end (time, tag).
    t.add_column("release", overflow="fold")
    t.add_column("time", justify="right", no_wrap=True)
    t.add_column("detail", overflow="fold", ratio=1)
    from rich.text import Text

    for h in run.hosts:
        style = RESULT_STYLE.get(h.result, "")
        # Text, not markup: a host named "[/data]" or an error holding "[/]"
        # must print as written (a markup string would raise).
        t.add_row(
            Text(mask(h.host)),
            Text(h.result, style=style),
            Text(mask(h.release or "-")),
            f"{h.seconds:.1f}s",
            Text(mask(h.error or h.detail or "")),
        )
    return t


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(mask(text))


def summary_line(run: RunReport) -> str:
    counts = ", ".join(f"{n} {r}" for r, n in sorted(run.counts().items()))
    return f"{run.result}: {counts or 'no hosts'} in {run.seconds:.1f}s"


def elapsed(seconds: float) -> str:
    """``12.3s``, ``1m05s``, ``1h02m``: short enough for a live line."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, sec = divmod(int(seconds), 60)
    if m < 60:
        return f"{m}m{sec:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


class Progress:
    """The run's progress: hosts done of total, batch k of n, and when each
    host started (its first step). ``start`` gives the totals; without it
    they grow with the batches seen."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.t0 = clock()
        self.total = 0
        self.batches = 0
        self.batch = 0
        self.done: set[str] = set()
        self.started: dict[str, float] = {}

    def start(self, hosts: list[str], batches: list[int]) -> None:
        self.total, self.batches = len(hosts), len(batches)

    def enter_batch(self, no: int, hosts: list[str]) -> None:
        self.batch = no
        self.batches = max(self.batches, no)
        seen = len(self.done) + sum(h not in self.done for h in hosts)
        self.total = max(self.total, seen)

    def host_started(self, host: str) -> None:
        self.started.setdefault(host, self.clock())

    def host_seconds(self, host: str) -> float | None:
        t = self.started.get(host)
        return None if t is None else self.clock() - t

    def host_done(self, host: str) -> None:
        self.done.add(host)
        self.total = max(self.total, len(self.done))

    def line(self) -> str:
        """``batch 1 of 3 · 2/5 hosts done · 1m12s``"""
        parts = [f"batch {self.batch} of {self.batches}"] if self.batch else []
        parts.append(f"{len(self.done)}/{self.total} hosts done")
        parts.append(elapsed(self.clock() - self.t0))
        return " · ".join(parts)


class PlainReporter:
    """Line per event: for logs, pipes and CI (no cursor tricks). After each
    host's result, a ``== 2/5 hosts done (batch 1 of 3)`` line."""

    def __init__(self, stream: IO[str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()
        self.clock = clock
        self.progress = Progress(clock)
        self._t0 = self.progress.t0

    def _emit(self, text: str) -> None:
        with self._lock:
            self.stream.write(mask(f"[{self.clock() - self._t0:6.1f}s] {text}") + "\n")
            self.stream.flush()

    def start(self, hosts: list[str], batches: list[int]) -> None:
        self.progress.start(hosts, batches)
        if len(batches) > 1:
            sizes = ", ".join(map(str, batches))
            self._emit(f"== {len(hosts)} hosts in {len(batches)} batches ({sizes})")

    def batch(self, no: int, hosts: list[str]) -> None:
        self.progress.enter_batch(no, hosts)
        self._emit(f"== batch {no}: {', '.join(hosts)}")

    def step(self, host: str, step: str) -> None:
        self.progress.host_started(host)
        self._emit(f"{host}: {step}")

    def log(self, host: str, line: str) -> None:
        self._emit(f"{host}: {line}")

    def host_done(self, report: HostReport) -> None:
        self.progress.host_done(report.host)
        extra = f" ({report.error or report.detail})" if (report.error or report.detail) else ""
        self._emit(f"{report.host}: {report.result}{extra} in {report.seconds:.1f}s")
        p = self.progress
        of = f" (batch {p.batch} of {p.batches})" if p.batch else ""
        self._emit(f"== {len(p.done)}/{p.total} hosts done{of}")

    def finish(self, run: RunReport) -> None:
        from rich.console import Console

        c = Console(file=self.stream, no_color=True, highlight=False, width=120)
        c.print(summary_table(run))
        c.print(summary_line(run))


class LiveReporter(PlainReporter):
    """On a terminal: a live line per host with its current step and its
    elapsed time, under the run's progress (batch k of n, hosts done of
    total, time so far); redrawn as the clock runs."""

    def __init__(self, console: Console, clock: Callable[[], float] = time.monotonic,
                 start_live: bool = True) -> None:
        super().__init__(console.file, clock)
        from rich.live import Live

        self.console = console
        self.state: dict[str, str] = {}
        self.finished: dict[str, float] = {}
        self.live = Live(console=console, refresh_per_second=4, transient=True,
                         get_renderable=self.render)
        if start_live:
            self.live.start()

    def render(self) -> Table:
        """The live block as it is now (rich calls this on every refresh)."""
        from rich.table import Table
        from rich.text import Text

        t = Table.grid(padding=(0, 2))
        t.add_column()
        t.add_column()
        t.add_column(justify="right")
        with self._lock:
            t.add_row("[bold]run[/bold]", self.progress.line(), "")
            for host, st in self.state.items():
                secs = self.finished.get(host)
                if secs is None:
                    secs = self.progress.host_seconds(host)
                t.add_row(Text(mask(host)), mask(st), "" if secs is None else elapsed(secs))
        return t

    def _update(self) -> None:
        self.live.refresh()

    def start(self, hosts: list[str], batches: list[int]) -> None:
        self.progress.start(hosts, batches)

    def batch(self, no: int, hosts: list[str]) -> None:
        self.progress.enter_batch(no, hosts)
        self.console.print(f"[bold]== batch {no} of {self.progress.batches}[/bold]: "
                           f"{_esc(', '.join(hosts))}")
        with self._lock:
            for h in hosts:
                self.state[h] = "waiting"
        self._update()

    def step(self, host: str, step: str) -> None:
        self.progress.host_started(host)
        with self._lock:
            self.state[host] = f"[cyan]{_esc(step)}…[/cyan]"
        self._update()

    def log(self, host: str, line: str) -> None:
        self.console.print(mask(f"{host}: {line}"), markup=False)

    def host_done(self, report: HostReport) -> None:
        self.progress.host_done(report.host)
        style = RESULT_STYLE.get(report.result, "")
        with self._lock:
            self.state[report.host] = f"[{style}]{report.result}[/]" if style else report.result
            self.finished[report.host] = report.seconds
        self._update()
        if report.error:
            self.console.print(mask(f"{report.host}: {report.error}"), markup=False, style="red")

    def finish(self, run: RunReport) -> None:
        self.live.stop()
        self.console.print(summary_table(run))
        self.console.print(summary_line(run))


class JsonReporter(PlainReporter):
    """``--output json``: progress stays on stderr, the report goes to stdout."""

    def finish(self, run: RunReport) -> None:
        super().finish(run)  # the summary table still ends the run, on stderr
        # masked before serialising: json.dumps escapes, and would hide a secret
        sys.stdout.write(dumps_masked(run.to_json(), indent=2) + "\n")
        sys.stdout.flush()


def choose_reporter(output: str) -> Reporter:
    """JSON when asked; GitHub Actions when running there; live on a
    terminal; plain lines otherwise."""
    from deployer.report.github import GithubReporter, in_github

    if output == "json":
        return JsonReporter()
    if in_github():
        return GithubReporter()
    if sys.stderr.isatty():
        from deployer.cli.output import console

        return LiveReporter(console(True))
    return PlainReporter()
