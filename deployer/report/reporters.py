"""Progress while a run goes on, and the summary at its end.

Every reporter gets the same events from the deploy layer (which never
prints): a batch starts, a host enters a step, a host logs a line, a host
finishes. All text passes through the masker.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Protocol

from deployer.report.model import HostReport, RunReport
from deployer.secrets import dumps_masked, mask

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


class Reporter(Protocol):
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
    t.add_column("result")
    t.add_column("release")
    t.add_column("time", justify="right")
    t.add_column("detail", overflow="fold")
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


class PlainReporter:
    """Line per event: for logs, pipes and CI (no cursor tricks)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()
        self._t0 = time.monotonic()

    def _emit(self, text: str) -> None:
        with self._lock:
            self.stream.write(mask(f"[{time.monotonic() - self._t0:6.1f}s] {text}") + "\n")
            self.stream.flush()

    def batch(self, no: int, hosts: list[str]) -> None:
        self._emit(f"== batch {no}: {', '.join(hosts)}")

    def step(self, host: str, step: str) -> None:
        self._emit(f"{host}: {step}")

    def log(self, host: str, line: str) -> None:
        self._emit(f"{host}: {line}")

    def host_done(self, report: HostReport) -> None:
        extra = f" ({report.error or report.detail})" if (report.error or report.detail) else ""
        self._emit(f"{report.host}: {report.result}{extra} in {report.seconds:.1f}s")

    def finish(self, run: RunReport) -> None:
        from rich.console import Console

        c = Console(file=self.stream, no_color=True, highlight=False, width=120)
        c.print(summary_table(run))
        c.print(summary_line(run))


class LiveReporter(PlainReporter):
    """A live line per host with its current step (rich), on a terminal."""

    def __init__(self, console: Console) -> None:
        super().__init__(console.file)
        from rich.live import Live

        self.console = console
        self.state: dict[str, str] = {}
        self.live = Live(self._render(), console=console, refresh_per_second=8, transient=True)
        self.live.start()

    def _render(self) -> Table:
        from rich.table import Table
        from rich.text import Text

        t = Table.grid(padding=(0, 2))
        for host, st in self.state.items():
            t.add_row(Text(mask(host)), mask(st))
        return t

    def _update(self) -> None:
        with self._lock:
            self.live.update(self._render())

    def batch(self, no: int, hosts: list[str]) -> None:
        self.console.print(f"[bold]== batch {no}[/bold]: {_esc(', '.join(hosts))}")
        for h in hosts:
            self.state[h] = "waiting"
        self._update()

    def step(self, host: str, step: str) -> None:
        self.state[host] = f"[cyan]{_esc(step)}…[/cyan]"
        self._update()

    def log(self, host: str, line: str) -> None:
        self.console.print(mask(f"{host}: {line}"), markup=False)

    def host_done(self, report: HostReport) -> None:
        style = RESULT_STYLE.get(report.result, "")
        self.state[report.host] = f"[{style}]{report.result}[/] {report.seconds:.1f}s"
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
