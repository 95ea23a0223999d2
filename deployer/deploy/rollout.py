"""Rolling a per-host job out over the inventory: batches, parallelism, and
the failure policy. Pure scheduling: it knows nothing of SSH or compose.

Semantics (documented in the README):
- ``batches``: sizes, each a count or a percentage of the targeted hosts
  (rounded up, at least 1); the last size repeats until every host is done.
- at most ``max_parallel`` hosts are in flight at once, inside a batch;
- after each batch, if the failed hosts so far exceed ``max_fail_percentage``
  of the targeted hosts, no further batch starts and the rest are ``skipped``;
- ``pause`` seconds between batches;
- Ctrl-C, SIGTERM or SIGHUP (``cancel`` set, :mod:`deployer.deploy.interrupt`):
  no new host starts; hosts in flight finish their current step and then
  complete or roll back (the job decides; after a second interrupt it rolls
  them back at once).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from deployer.errors import ConfigError

T = TypeVar("T")


def batch_sizes(total: int, sizes: Sequence[int | str]) -> list[int]:
    """``batch_sizes(10, [1, "25%", "100%"]) == [1, 3, 6]``."""
    if total <= 0:
        return []
    out: list[int] = []
    done = 0
    i = 0
    while done < total:
        spec = sizes[min(i, len(sizes) - 1)]
        if isinstance(spec, str):
            pct = float(spec.rstrip("%"))
            n = max(1, math.ceil(total * pct / 100))
        else:
            n = int(spec)
        if n < 1:
            raise ConfigError(f"batch size {spec!r} must be at least 1")
        n = min(n, total - done)
        out.append(n)
        done += n
        i += 1
    return out


def parse_batches(text: str) -> list[int | str]:
    """``--batches 1,25%,100%`` from the command line."""
    out: list[int | str] = []
    for part in text.split(","):
        p = part.strip()
        if p.endswith("%"):
            try:
                v = float(p[:-1])
            except ValueError:
                v = -1
            if not 0 < v <= 100:
                raise ConfigError(f"--batches: {p!r} is not a percentage in (0, 100]")
            out.append(p)
        else:
            if not p.isdigit() or int(p) < 1:
                raise ConfigError(f"--batches: {p!r} is not a count >= 1 or a percentage")
            out.append(int(p))
    if not out:
        raise ConfigError("--batches: give at least one size, e.g. 1,50%")
    return out


@dataclass
class RolloutPolicy:
    """How a run goes over its hosts (``rollout:`` of the inventory, with the
    command line's overrides)."""

    batches: list[int | str] = field(default_factory=lambda: ["100%"])
    max_parallel: int = 20
    max_fail_percentage: float = 0.0
    pause: float = 0.0
    max_connecting: int = 10  # SSH handshakes in flight at once (deployer.remote.ssh)

    def sizes(self, total: int) -> list[int]:
        return batch_sizes(total, self.batches)

    def first_wave(self, total: int) -> int:
        """How many hosts start first: the first batch, at most max_parallel."""
        sizes = self.sizes(total)
        return min(sizes[0] if sizes else 0, self.max_parallel)


@dataclass
class Slot(Generic[T]):
    """One host's place in the rollout."""

    item: T
    batch: int = 0
    outcome: object = None
    failed: bool = False
    skipped: bool = False


def rollout(
    items: Sequence[T],
    job: Callable[[T, int], object],
    failed: Callable[[object], bool],
    policy: RolloutPolicy,
    *,
    cancel: threading.Event | None = None,
    on_batch: Callable[[int, list[T]], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Slot[T]]:
    """Run ``job(item, batch_no)`` over ``items`` per ``policy``.

    ``job`` must not raise for a host failure (it returns an outcome; the
    ``failed`` predicate classifies it); an exception is treated as a failure
    with the exception as outcome. Returns one slot per item, in input order.
    """
    cancel = cancel or threading.Event()
    slots = [Slot(it) for it in items]
    sizes = policy.sizes(len(slots))
    total = len(slots)
    n_failed = 0
    start = 0
    stop = False
    with ThreadPoolExecutor(max_workers=max(1, policy.max_parallel)) as pool:
        for bno, size in enumerate(sizes, 1):
            batch = slots[start : start + size]
            start += size
            if stop or cancel.is_set():
                for s in batch:
                    s.skipped = True
                    s.batch = bno
                continue
            if on_batch:
                on_batch(bno, [s.item for s in batch])
            futures: dict[Future[object], Slot[T]] = {}
            pending = deque(batch)  # popleft: O(1) per host (list.pop(0) was O(batch))
            # Bounded by max_parallel also here so a batch larger than the pool
            # does not queue SSH connection starts all at once.
            while pending or futures:
                while pending and len(futures) < policy.max_parallel and not cancel.is_set():
                    s = pending.popleft()
                    s.batch = bno
                    futures[pool.submit(job, s.item, bno)] = s
                if cancel.is_set():
                    for s in pending:
                        s.skipped = True
                        s.batch = bno
                    pending.clear()
                if not futures:
                    break
                try:
                    done, _ = wait(list(futures), timeout=0.2, return_when=FIRST_COMPLETED)
                except KeyboardInterrupt:
                    # Ctrl-C: start nothing new; hosts in flight finish their
                    # step and complete or roll back, then we report.
                    cancel.set()
                    continue
                for f in done:
                    s = futures.pop(f)
                    exc = f.exception()
                    s.outcome = exc if exc is not None else f.result()
                    s.failed = exc is not None or failed(s.outcome)
                    n_failed += s.failed
            if n_failed * 100 > policy.max_fail_percentage * total:
                stop = True
            elif policy.pause and bno < len(sizes) and not cancel.is_set():
                sleep(policy.pause)
    return slots
