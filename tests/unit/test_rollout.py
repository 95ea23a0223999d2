"""Batch sizes, ordering, parallelism bound, failure policy, cancel."""

from __future__ import annotations

import threading
import time

import pytest

from deployer.deploy.rollout import RolloutPolicy, batch_sizes, parse_batches, rollout
from deployer.errors import ConfigError


@pytest.mark.parametrize(
    ("total", "sizes", "expected"),
    [
        (10, [1, "25%", "100%"], [1, 3, 6]),
        (4, [1, "50%"], [1, 2, 1]),
        (4, ["100%"], [4]),
        (5, [2], [2, 2, 1]),
        (1, [1, "50%"], [1]),
        (3, ["10%"], [1, 1, 1]),
        (0, [1], []),
    ],
)
def test_batch_sizes(total: int, sizes: list[int | str], expected: list[int]) -> None:
    assert batch_sizes(total, sizes) == expected


def test_parse_batches() -> None:
    assert parse_batches("1, 25%,100%") == [1, "25%", "100%"]
    for bad in ("0", "x", "150%", ""):
        with pytest.raises(ConfigError):
            parse_batches(bad)


def _recording_job(log: list[tuple[str, str, float]], fail: set[str], delay: float = 0.05):
    lock = threading.Lock()

    def job(name: str, batch: int) -> str:
        with lock:
            log.append(("start", name, time.monotonic()))
        time.sleep(delay)
        with lock:
            log.append(("end", name, time.monotonic()))
        return "bad" if name in fail else "good"

    return job


def test_canary_finishes_before_others_start_and_others_overlap() -> None:
    log: list[tuple[str, str, float]] = []
    recorded = _recording_job(log, set())
    # b and c each wait, inside their job, until both have started: run one
    # after the other, the barrier breaks (a sleep would race a loaded machine).
    together = threading.Barrier(2, timeout=30)

    def job(name: str, batch: int) -> str:
        if name in ("b", "c"):
            together.wait()
        return str(recorded(name, batch))

    slots = rollout(["a", "b", "c", "d"], job, lambda o: o == "bad",
                    RolloutPolicy(batches=[1, "50%"]))
    assert [s.batch for s in slots] == [1, 2, 2, 3]
    assert not together.broken
    events = [(e, n) for e, n, _ in log]
    assert events[:2] == [("start", "a"), ("end", "a")]
    last_end = max(events.index(("end", "b")), events.index(("end", "c")))
    assert events.index(("start", "d")) > last_end


def test_failed_canary_stops_rollout() -> None:
    log: list[tuple[str, str, float]] = []
    slots = rollout(["a", "b", "c", "d"], _recording_job(log, {"a"}), lambda o: o == "bad",
                    RolloutPolicy(batches=[1, "50%"]))
    assert slots[0].failed
    assert [s.skipped for s in slots] == [False, True, True, True]
    assert {n for _, n, _ in log} == {"a"}


def test_max_fail_percentage_lets_rollout_continue() -> None:
    log: list[tuple[str, str, float]] = []
    slots = rollout(["a", "b", "c", "d"], _recording_job(log, {"b"}), lambda o: o == "bad",
                    RolloutPolicy(batches=[1, "50%"], max_fail_percentage=50))
    assert [s.failed for s in slots] == [False, True, False, False]
    assert not any(s.skipped for s in slots)


def test_max_parallel_bounds_in_flight() -> None:
    in_flight = 0
    peak = 0
    lock = threading.Lock()

    def job(name: str, batch: int) -> str:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.03)
        with lock:
            in_flight -= 1
        return "good"

    rollout([str(i) for i in range(9)], job, lambda o: False, RolloutPolicy(max_parallel=3))
    assert peak == 3


def test_exception_in_job_is_a_failure_not_a_crash() -> None:
    def job(name: str, batch: int) -> str:
        if name == "x":
            raise RuntimeError("boom")
        return "good"

    slots = rollout(["x", "y"], job, lambda o: False, RolloutPolicy(max_fail_percentage=100))
    assert slots[0].failed and isinstance(slots[0].outcome, RuntimeError)
    assert not slots[1].failed


def test_cancel_starts_nothing_new_but_finishes_in_flight() -> None:
    cancel = threading.Event()
    finished: list[str] = []

    def job(name: str, batch: int) -> str:
        cancel.set()  # as if Ctrl-C arrived while the first host ran
        time.sleep(0.05)
        finished.append(name)
        return "good"

    slots = rollout(["a", "b", "c"], job, lambda o: False, RolloutPolicy(max_parallel=1),
                    cancel=cancel)
    assert finished == ["a"]
    assert [s.skipped for s in slots] == [False, True, True]


def test_pause_between_batches_only() -> None:
    pauses: list[float] = []
    rollout(["a", "b", "c"], lambda n, b: "good", lambda o: False,
            RolloutPolicy(batches=[1], pause=2.5), sleep=pauses.append)
    assert pauses == [2.5, 2.5]
