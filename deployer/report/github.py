"""GitHub Actions output: what a run looks like when ``GITHUB_ACTIONS=true``.

The runner reads workflow commands (``::name key=value::data``) from the
step's output, stdout and stderr alike (actions/runner
``src/Runner.Worker/Handlers/ScriptHandler.cs`` gives each stream its own
``OutputManager`` with the ``ActionCommandManager``), so in CI deployer:

- announces every secret value with ``::add-mask::`` on **stderr**, at the
  moment the config loader registers it, so before anything else can print
  it (the runner then hides it even where deployer's own masker could not
  see it, e.g. a secret reformatted by a remote tool). Never on stdout:
  ``deployer -o json ... > report.json`` must hold valid JSON and no secret;
- prints one ``::group::``/``::endgroup::`` per host, written in one piece when
  the host finishes, so the lines of hosts deploying in parallel never
  interleave in the log;
- adds an ``::error`` annotation per failed host (shown on the run's page;
  the CLI's own error annotation goes to stderr, for the same reason);
- appends a Markdown summary to ``$GITHUB_STEP_SUMMARY`` and ``release`` and
  ``result`` to ``$GITHUB_OUTPUT`` (the composite action's outputs).

No colours, no live display, no prompts. Every line starts with text
deployer chose (a timestamp, a host name), never with text a server sent, so
remote output cannot smuggle in a workflow command of its own.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO

from deployer.report.model import HostReport, RunReport
from deployer.secrets import mask, masker

# Escapes of the runner (actions/runner ActionCommand.cs): the data part of a
# command unescapes %25 %0D %0A; property values also %3A (:) and %2C (,).


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def command(name: str, data: str = "", **properties: str) -> str:
    """One workflow command line, escaped (``data`` is not masked here)."""
    props = ",".join(f"{k}={escape_property(v)}" for k, v in properties.items())
    return f"::{name}{' ' + props if props else ''}::{escape_data(data)}"


def in_github(environ: Mapping[str, str] | None = None) -> bool:
    """Running as a GitHub Actions step: the one place that asks."""
    return (os.environ if environ is None else environ).get("GITHUB_ACTIONS") == "true"


class MaskAnnouncer:
    """Writes ``::add-mask::`` once per secret value to one stream.

    A multi-line value (a key) is not announced whole: the runner masks line
    by line, and the masker registers each long line of it separately."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._seen: set[str] = set()
        self._lock = threading.RLock()

    def __call__(self, value: str) -> None:
        self.announce([value])

    def announce(self, values: Iterable[str]) -> None:
        with self._lock:
            lines = []
            for v in values:
                if v in self._seen or "\n" in v or "\r" in v or not v.strip():
                    continue
                self._seen.add(v)
                lines.append(command("add-mask", v) + "\n")
            if lines:
                self.stream.write("".join(lines))
                self.stream.flush()


_announcers: weakref.WeakKeyDictionary[IO[str], MaskAnnouncer] = weakref.WeakKeyDictionary()
_announcers_lock = threading.Lock()


def announcer_for(stream: IO[str]) -> MaskAnnouncer:
    """One announcer per stream, so the CLI hook and the reporter (both on
    stdout) do not announce a value twice."""
    with _announcers_lock:
        a = _announcers.get(stream)
        if a is None:
            a = MaskAnnouncer(stream)
            _announcers[stream] = a
        return a


_subscribed: list[tuple[MaskAnnouncer, Callable[[], None]]] = []


def enable_masks(stream: IO[str] | None = None) -> None:
    """Announce every secret known now, and every one registered later at the
    moment it is registered (config loading registers each ``${VAR}`` value
    before anything can print it). Called by the CLI's ``main`` at start-up
    when ``GITHUB_ACTIONS=true``; idempotent. ``stream`` defaults to stderr."""
    a = announcer_for(stream or sys.stderr)
    a.announce(masker.originals)
    if not any(sub is a for sub, _ in _subscribed):
        _subscribed.append((a, masker.subscribe(a)))


def disable_masks() -> None:
    """Undo :func:`enable_masks` (tests)."""
    while _subscribed:
        _subscribed.pop()[1]()


def error_annotation(title: str, message: str, stream: IO[str] | None = None) -> None:
    """An ``::error`` annotation with a masked message (used by the CLI for
    errors that end a command before any host is touched), on stderr by
    default so that stdout stays the JSON report under ``-o json``."""
    out = stream or sys.stderr
    a = announcer_for(out)
    a.announce(masker.originals)
    out.write(command("error", mask(message), title=mask(title)) + "\n")
    out.flush()


class GithubReporter:
    """The :class:`~deployer.report.reporters.Reporter` for GitHub Actions."""

    def __init__(
        self, stream: IO[str] | None = None, environ: Mapping[str, str] | None = None,
        masks: IO[str] | None = None,
    ) -> None:
        """``stream`` gets the log (stdout), ``masks`` the ``::add-mask::``
        lines (stderr: a secret is never written to stdout, not even there)."""
        self.stream = stream or sys.stdout
        self.environ = os.environ if environ is None else environ
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._buffers: dict[str, list[str]] = {}
        self._annotated: set[str] = set()
        self._masks = announcer_for(masks or sys.stderr)
        self._masks.announce(masker.originals)

    # -- output -----------------------------------------------------------

    def _write(self, lines: list[str]) -> None:
        """Masks first (any secret registered since), then the lines, masked."""
        with self._lock:
            self._masks.announce(masker.originals)
            self.stream.write("".join(mask(line) + "\n" for line in lines))
            self.stream.flush()

    def _stamp(self, text: str) -> list[str]:
        """``[  12.3s] text``, one line per line of ``text``: no line can start
        with ``::`` (a workflow command) whatever a server printed."""
        t = f"[{time.monotonic() - self._t0:6.1f}s]"
        parts = text.splitlines() or [""]
        return [f"{t} {p}" for p in parts]

    def _buffer(self, host: str, lines: list[str]) -> None:
        with self._lock:
            self._buffers.setdefault(host, []).extend(lines)

    # -- Reporter ---------------------------------------------------------

    def start(self, hosts: list[str], batches: list[int]) -> None:
        """Nothing to show before the first batch: each host gets its group."""

    def batch(self, no: int, hosts: list[str]) -> None:
        self._write([f"== batch {no}: {', '.join(hosts)}"])

    def step(self, host: str, step: str) -> None:
        self._buffer(host, self._stamp(step))

    def log(self, host: str, line: str) -> None:
        self._buffer(host, self._stamp(line))

    def host_done(self, report: HostReport) -> None:
        extra = report.error or report.detail
        self._buffer(report.host, self._stamp(
            f"{report.result}{f' ({extra})' if extra else ''} in {report.seconds:.1f}s"))
        self._flush_host(report.host, f"{report.result} in {report.seconds:.1f}s")
        if not report.ok:
            self._annotate(report)

    def _flush_host(self, host: str, status: str) -> None:
        with self._lock:
            lines = self._buffers.pop(host, [])
        title = command("group", f"{host}: {status}")
        self._write([title, *lines, "::endgroup::"])

    def _annotate(self, h: HostReport) -> None:
        if h.host in self._annotated:
            return
        self._annotated.add(h.host)
        level = "warning" if h.result == "skipped" else "error"
        message = f"{h.result}: {h.error or h.detail or 'no detail'}"
        self._write([command(level, mask(message), title=mask(f"deployer: {h.host}"))])

    def finish(self, run: RunReport) -> None:
        from rich.console import Console

        from deployer.report.reporters import summary_line, summary_table

        # Hosts that never finished (an interrupted run) still get their lines.
        for host in list(self._buffers):
            self._flush_host(host, "unfinished")
        for h in run.hosts:
            if not h.ok:
                self._annotate(h)
        with self._lock:
            self._masks.announce(masker.originals)
            c = Console(file=self.stream, no_color=True, highlight=False, width=120,
                        force_terminal=False)
            c.print(summary_table(run))
            c.print(mask(summary_line(run)), markup=False)
            self.stream.flush()
        summary_path = self.environ.get("GITHUB_STEP_SUMMARY")
        if summary_path:
            _append(summary_path, step_summary(run))
        output_path = self.environ.get("GITHUB_OUTPUT")
        if output_path:
            _append(output_path, outputs_text({
                "release": run.release or "", "result": run.result,
            }))


# -- files ------------------------------------------------------------------

RESULT_ICON = {
    "deployed": "✅", "unchanged": "✅", "ok": "✅",
    "failed": "❌", "rolled back": "↩️", "skipped": "⏭️",
}


def _cell(text: str) -> str:
    """A Markdown table cell: masked, no pipes, no raw HTML, no line breaks."""
    text = mask(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = text.replace("|", "\\|")
    return "<br>".join(line for line in text.splitlines() if line.strip())


def step_summary(run: RunReport) -> str:
    """The Markdown for ``$GITHUB_STEP_SUMMARY``."""
    icon = {"success": "✅", "failure": "❌"}.get(run.result, "⚠️")
    counts = ", ".join(f"{n} {r}" for r, n in sorted(run.counts().items())) or "no hosts"
    lines = [
        f"### {icon} deployer {_cell(run.command)} {_cell(run.app)} → "
        f"{_cell(run.env)}: {run.result}",
        "",
        f"Release `{_cell(run.release or '-')}` · {counts} · {run.seconds:.1f}s",
        "",
        "| host | result | release | time | detail |",
        "| --- | --- | --- | ---: | --- |",
    ]
    for h in run.hosts:
        lines.append(
            f"| {_cell(h.host)} | {RESULT_ICON.get(h.result, '')} {h.result} "
            f"| {_cell(h.release or '-')} | {h.seconds:.1f}s "
            f"| {_cell(h.error or h.detail or '')} |"
        )
    if run.images:
        lines += ["", "| image | reference |", "| --- | --- |"]
        lines += [f"| {_cell(k)} | `{_cell(v)}` |" for k, v in sorted(run.images.items())]
    return "\n".join(lines) + "\n\n"


def outputs_text(values: Mapping[str, str]) -> str:
    """``name=value`` lines for ``$GITHUB_OUTPUT``; a value with a line break
    uses the runner's ``name<<DELIMITER`` form with a delimiter it cannot
    contain."""
    out = []
    for name, value in values.items():
        value = mask(value)
        if "\n" in value or "\r" in value:
            delim = f"ghadelimiter_{uuid.uuid4()}"
            out.append(f"{name}<<{delim}\n{value}\n{delim}\n")
        else:
            out.append(f"{name}={value}\n")
    return "".join(out)


def _append(path: str, text: str) -> None:
    with Path(path).open("a", encoding="utf-8") as f:
        f.write(text)
