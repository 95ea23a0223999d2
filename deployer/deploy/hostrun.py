"""Bookkeeping shared by every per-host job: step timing, events, the report."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum

from deployer.report.model import HostReport, HostResult, StepTiming
from deployer.report.reporters import Reporter


class _Unset(Enum):
    UNSET = "unset"


UNSET = _Unset.UNSET  # "not given", distinct from None ("no release")


@dataclass
class HostRun:
    """One host's run: emits step events and records their timings."""

    host: str
    reporter: Reporter
    release: str | None = None  # the release the host runs, unless a report says otherwise
    started: float = field(default_factory=time.monotonic)
    steps: list[StepTiming] = field(default_factory=list)
    current: str = ""
    failed: str = ""  # the first step that raised (clean-up steps may follow it)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.current = name
        self.reporter.step(self.host, name)
        t0 = time.monotonic()
        ok = False
        try:
            yield
            ok = True
        except BaseException:
            self.failed = self.failed or name
            raise
        finally:
            self.steps.append(StepTiming(name, time.monotonic() - t0, ok))

    def log(self, line: str) -> None:
        self.reporter.log(self.host, line)

    def report(
        self,
        result: HostResult,
        *,
        error: str | None = None,
        detail: str | None = None,
        release: str | _Unset | None = UNSET,
        rolled_back_from: str | None = None,
    ) -> HostReport:
        """The host's report. ``release``: what it runs now; not given, the
        run's :attr:`release`; ``None``: nothing (a first release that failed
        and was taken down)."""
        return HostReport(
            host=self.host,
            result=result,
            release=self.release if release is UNSET else release,
            rolled_back_from=rolled_back_from,
            seconds=time.monotonic() - self.started,
            error=error,
            detail=detail,
            steps=list(self.steps),
        )
