"""Bookkeeping shared by every per-host job: step timing, events, the report."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from deployer.report.model import HostReport, Result, StepTiming
from deployer.report.reporters import Reporter


@dataclass
class HostRun:
    """One host's run: emits step events and records their timings."""

    host: str
    reporter: Reporter
    release: str | None = None
    started: float = field(default_factory=time.monotonic)
    steps: list[StepTiming] = field(default_factory=list)
    current: str = ""

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.current = name
        self.reporter.step(self.host, name)
        t0 = time.monotonic()
        ok = False
        try:
            yield
            ok = True
        finally:
            self.steps.append(StepTiming(name, time.monotonic() - t0, ok))

    def log(self, line: str) -> None:
        self.reporter.log(self.host, line)

    def report(
        self,
        result: Result,
        *,
        error: str | None = None,
        detail: str | None = None,
        release: str | None = None,
    ) -> HostReport:
        return HostReport(
            host=self.host,
            result=result,
            release=release if release is not None else self.release,
            seconds=time.monotonic() - self.started,
            error=error,
            detail=detail,
            steps=list(self.steps),
        )
