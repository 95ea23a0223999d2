"""Run one function over many hosts in parallel, each failure its own.

A deploy touches hosts in parallel, bounded (``rollout.max_parallel``): SSH
handshakes and image pulls are I/O-bound, so threads are the right tool. One
host's exception is that host's outcome and never stops the others; outcomes
come back in input order so reports are stable.

Ctrl-C stops *starting* work: items not yet started are marked skipped, items
in flight run to the end of their current step (the function can poll the
``stop`` event between steps), then :class:`Interrupted` is raised with every
outcome so the caller can still report and exit 130. A second Ctrl-C while
waiting aborts at once (the workers are daemon threads).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

log = logging.getLogger("deployer.remote")

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Outcome(Generic[T, R]):
    """What happened to one item. ``skipped``: never started (interrupted)."""

    item: T
    value: R | None = None
    error: BaseException | None = None
    skipped: bool = True
    started: float = 0.0  # time.monotonic() at start
    finished: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.skipped and self.error is None

    @property
    def duration(self) -> float:
        return max(0.0, self.finished - self.started)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped the pool; ``outcomes`` has every item (skipped ones too)."""

    def __init__(self, outcomes: list[Outcome[Any, Any]]) -> None:
        super().__init__("interrupted")
        self.outcomes = outcomes


def run_parallel(
    items: Iterable[T],
    fn: Callable[[T], R],
    max_parallel: int,
    *,
    on_start: Callable[[T], None] | None = None,
    on_done: Callable[[Outcome[T, R]], None] | None = None,
    stop: threading.Event | None = None,
    name: str = "deployer",
) -> list[Outcome[T, R]]:
    """Call ``fn(item)`` for every item, at most ``max_parallel`` at a time.

    Returns one :class:`Outcome` per item, in input order. ``on_start`` and
    ``on_done`` run in the worker thread (keep them quick and thread-safe); an
    exception in ``on_start`` fails that item, one in ``on_done`` is logged.
    ``stop``: set it (from anywhere) to start no further items; Ctrl-C sets it.
    """
    if max_parallel < 1:
        raise ValueError("max_parallel must be at least 1")
    work = list(items)
    outcomes: list[Outcome[T, R]] = [Outcome(item) for item in work]
    stop = stop if stop is not None else threading.Event()
    lock = threading.Lock()
    cursor = [0]

    def take() -> int | None:
        with lock:
            if stop.is_set() or cursor[0] >= len(work):
                return None
            i = cursor[0]
            cursor[0] += 1
            return i

    def one(i: int) -> None:
        out = outcomes[i]
        out.skipped = False
        out.started = time.monotonic()
        try:
            if on_start is not None:
                on_start(out.item)
            out.value = fn(out.item)
        except BaseException as e:  # a host's failure is its outcome, whatever it is
            out.error = e
        finally:
            out.finished = time.monotonic()
        if on_done is not None:
            try:
                on_done(out)
            except Exception:
                log.exception("on_done callback failed for %r", out.item)

    def worker(done: threading.Event) -> None:
        try:
            while (i := take()) is not None:
                one(i)
        finally:
            done.set()

    # Completion is signalled by events, not Thread.join/is_alive: a Ctrl-C
    # landing inside join() can leave is_alive() wrong on some CPython versions.
    finished = [threading.Event() for _ in range(min(max_parallel, len(work)))]
    threads = [
        threading.Thread(target=worker, args=(done,), name=f"{name}-{n}", daemon=True)
        for n, done in enumerate(finished)
    ]
    try:
        for t in threads:
            t.start()
        _wait(finished)
    except KeyboardInterrupt:
        stop.set()
        log.warning("interrupted: starting no new hosts; waiting for hosts in flight")
        for t, done in zip(threads, finished, strict=True):
            if t.ident is None:  # Ctrl-C came before it started; if it starts
                done.set()  # now, it sees ``stop`` and takes no item
        _wait(finished)  # a second Ctrl-C propagates from here
        raise Interrupted(list(outcomes)) from None
    return outcomes


def _wait(events: list[threading.Event]) -> None:
    for e in events:
        while not e.wait(0.2):
            pass
