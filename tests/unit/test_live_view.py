"""The live view shows the real step (``installing Docker (apt)``, not
``check docker…`` for minutes), each host's elapsed time and the run's
progress (hosts done of total, batch k of n); the plain lines say the same.
Rendered with a fake clock into a recording console."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from test_bootstrap import FRESH, INSTALLED_V1_JUST_ADDED, READY_V2, RecordingExecutor, host

from deployer.deploy.bootstrap import bootstrap_host, install_step
from deployer.deploy.hostrun import HostRun
from deployer.report.model import HostReport
from deployer.report.reporters import LiveReporter, PlainReporter, elapsed

HOSTS = ["sandbox-1", "sandbox-2", "sandbox-3"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def shown(r: LiveReporter) -> list[str]:
    c = Console(width=80, record=True, no_color=True, file=io.StringIO())
    c.print(r.render())
    return [" ".join(line.split()) for line in c.export_text().splitlines()]


def live(clock: Clock) -> tuple[LiveReporter, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, width=80, no_color=True)
    return LiveReporter(console, clock=clock, start_live=False), out


def test_live_view_shows_the_real_step_elapsed_time_and_progress() -> None:
    clock = Clock()
    r, out = live(clock)
    r.start(HOSTS, [1, 2])
    r.batch(1, ["sandbox-1"])
    assert shown(r) == ["run batch 1 of 2 · 0/3 hosts done · 0.0s", "sandbox-1 waiting"]
    clock.now += 2
    r.step("sandbox-1", "check docker")
    clock.now += 1
    r.step("sandbox-1", "installing Docker (apt)")
    clock.now += 69.5
    assert shown(r) == ["run batch 1 of 2 · 0/3 hosts done · 1m12s",
                        "sandbox-1 installing Docker (apt)… 1m10s"]
    r.host_done(HostReport("sandbox-1", "deployed", seconds=75.2))
    clock.now += 10
    r.batch(2, ["sandbox-2", "sandbox-3"])
    r.step("sandbox-2", "upload release")
    clock.now += 3
    assert shown(r) == ["run batch 2 of 2 · 1/3 hosts done · 1m25s",
                        "sandbox-1 deployed 1m15s",  # its own time, frozen when done
                        "sandbox-2 upload release… 3.0s",
                        "sandbox-3 waiting"]
    r.host_done(HostReport("sandbox-2", "failed", seconds=4.0, error="compose up: exit 1"))
    r.host_done(HostReport("sandbox-3", "unchanged", seconds=1.0))
    assert shown(r)[0] == "run batch 2 of 2 · 3/3 hosts done · 1m25s"
    assert "== batch 2 of 2: sandbox-2, sandbox-3" in out.getvalue()
    assert "sandbox-2: compose up: exit 1" in out.getvalue()


def test_without_start_the_totals_grow_with_the_batches() -> None:
    clock = Clock()
    r, _ = live(clock)
    r.batch(1, ["a", "b"])
    assert shown(r)[0] == "run batch 1 of 1 · 0/2 hosts done · 0.0s"


def test_plain_lines_say_the_same_and_keep_their_format() -> None:
    clock = Clock()
    buf = io.StringIO()
    r = PlainReporter(buf, clock=clock)
    r.start(HOSTS, [1, 2])
    r.batch(1, ["sandbox-1"])
    clock.now += 3
    r.step("sandbox-1", "installing Docker (apt)")
    clock.now += 60
    r.host_done(HostReport("sandbox-1", "deployed", seconds=63.0))
    lines = buf.getvalue().splitlines()
    assert lines == [
        "[   0.0s] == 3 hosts in 2 batches (1, 2)",
        "[   0.0s] == batch 1: sandbox-1",
        "[   3.0s] sandbox-1: installing Docker (apt)",
        "[  63.0s] sandbox-1: deployed in 63.0s",
        "[  63.0s] == 1/3 hosts done (batch 1 of 2)",
    ]
    # The shapes tests/e2e/test_rollout.py parses are unchanged.
    line = re.compile(r"^\[\s*[\d.]+s\] (.*)$")
    done = re.compile(r"^(\S+): (deployed|unchanged|failed)(?: \(.*\))? in [\d.]+s$")
    events = [m.group(1) for s in lines if (m := line.match(s))]
    assert [e for e in events if done.match(e)] == ["sandbox-1: deployed in 63.0s"]
    assert [e for e in events if e.startswith("== batch ")] == ["== batch 1: sandbox-1"]


def test_elapsed_format() -> None:
    assert [elapsed(s) for s in (0, 9.94, 59.9, 60, 65.4, 3599, 3600, 7322)] == [
        "0.0s", "9.9s", "59.9s", "1m00s", "1m05s", "59m59s", "1h00m", "2h02m"]


# -- bootstrap names the install step ---------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.events: list[str] = []

    def start(self, hosts: list[str], batches: list[int]) -> None: ...
    def batch(self, no: int, hosts: list[str]) -> None: ...
    def log(self, host: str, line: str) -> None: ...
    def host_done(self, report: HostReport) -> None: ...
    def finish(self, run: object) -> None: ...

    def step(self, host: str, step: str) -> None:
        self.events.append(f"{host}: {step}")


def test_bootstrap_emits_the_install_as_a_step_around_its_commands() -> None:
    rec = Recorder()
    run = HostRun("web-1", rec)  # type: ignore[arg-type]
    ex = RecordingExecutor([FRESH, INSTALLED_V1_JUST_ADDED])
    seen: list[tuple[str, int]] = []

    @contextmanager
    def step(name: str) -> Iterator[None]:
        seen.append((name, len(ex.ran)))
        with run.step(name):
            yield
        seen.append(("end", len(ex.ran)))

    with run.step("check docker"):
        bootstrap_host(ex, host("distro"), step=step)
    assert rec.events == ["web-1: check docker", "web-1: installing Docker (apt)"]
    # Around the four install commands, after the first probe, before the second.
    assert seen == [("installing Docker (apt)", 1), ("end", 5)]
    assert [s.step for s in run.steps] == ["installing Docker (apt)", "check docker"]


def test_bootstrap_with_nothing_to_install_emits_no_step() -> None:
    rec = Recorder()
    run = HostRun("web-1", rec)  # type: ignore[arg-type]
    bootstrap_host(RecordingExecutor([READY_V2]), host("docker-ce"), step=run.step)
    assert rec.events == []


def test_install_step_names() -> None:
    from deployer.commands.facts import parse_facts

    fresh = parse_facts(FRESH)
    assert install_step(fresh, "distro") == "installing Docker (apt)"
    assert install_step(fresh, "docker-ce") == "installing Docker (apt, Docker's repository)"


def test_summary_table_at_80_columns_never_cuts_the_release() -> None:
    from deployer.report.model import RunReport
    from deployer.report.reporters import summary_table

    run = RunReport("ship", "flaskpg", "sandbox", hosts=[
        HostReport("sandbox-1", "deployed", release="20261201T064600Z-c-dfba5be038e5",
                   seconds=75.2, detail="bootstrapped: installed per docker.install=distro"),
        HostReport("sandbox-2", "rolled back", release="20261130T101010Z-c-0123456789ab",
                   seconds=95.2, error="web: unhealthy: health check failed after 90s"),
    ])
    c = Console(width=80, record=True, no_color=True, file=io.StringIO())
    c.print(summary_table(run))
    text = c.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text
    for tail in ("064600Z-c-", "dfba5be038e5", "101010Z-c-", "0123456789ab"):
        assert tail in text
