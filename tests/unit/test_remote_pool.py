"""run_parallel: order, bound, isolation, stop and Ctrl-C."""

from __future__ import annotations

import _thread
import threading
import time

import pytest

from deployer.remote.pool import Interrupted, Outcome, run_parallel


def test_results_in_input_order_and_failures_isolated() -> None:
    last_done = threading.Event()

    def fn(i: int) -> int:
        if i == 0:
            assert last_done.wait(5)  # the first item finishes after the last one
        if i == 4:
            last_done.set()
        if i == 2:
            raise RuntimeError("boom")
        return i * 10

    done: list[int] = []
    outcomes = run_parallel(range(5), fn, max_parallel=5, on_done=lambda o: done.append(o.item))
    assert [o.item for o in outcomes] == [0, 1, 2, 3, 4]
    assert [o.value for o in outcomes] == [0, 10, None, 30, 40]
    assert [o.ok for o in outcomes] == [True, True, False, True, True]
    assert isinstance(outcomes[2].error, RuntimeError)
    assert sorted(done) == [0, 1, 2, 3, 4]
    assert done.index(4) < done.index(0)  # completion order is not input order


def test_at_most_max_parallel_in_flight() -> None:
    lock = threading.Lock()
    running, peak = [0], [0]

    def fn(_: int) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.03)
        with lock:
            running[0] -= 1

    run_parallel(range(12), fn, max_parallel=3)
    assert peak[0] == 3


def test_stop_event_skips_unstarted_items() -> None:
    stop = threading.Event()

    def fn(i: int) -> int:
        if i == 1:
            stop.set()
        return i

    outcomes = run_parallel(range(6), fn, max_parallel=1, stop=stop)
    assert [o.ok for o in outcomes] == [True, True, False, False, False, False]
    assert all(o.skipped for o in outcomes[2:])


def test_on_start_failure_fails_that_item_only() -> None:
    def on_start(i: int) -> None:
        if i == 0:
            raise ValueError("no")

    outcomes = run_parallel([0, 1], lambda i: i, 2, on_start=on_start)
    assert isinstance(outcomes[0].error, ValueError)
    assert outcomes[1].ok


def test_ctrl_c_lets_in_flight_finish_and_skips_the_rest() -> None:
    started = threading.Event()
    stop = threading.Event()

    def fn(i: int) -> int:
        if i == 0:
            started.set()
            assert stop.wait(5)  # still running when the pool is told to stop
        return i

    def interrupt() -> None:
        started.wait(5)
        _thread.interrupt_main()  # what Ctrl-C does to the main thread

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(Interrupted) as e:
        run_parallel(range(4), fn, max_parallel=1, stop=stop)
    outcomes: list[Outcome[int, int]] = e.value.outcomes
    assert outcomes[0].ok and outcomes[0].value == 0  # in flight: finished
    assert all(o.skipped for o in outcomes[1:])
    assert isinstance(e.value, KeyboardInterrupt)


def test_rejects_zero_parallel() -> None:
    with pytest.raises(ValueError):
        run_parallel([1], lambda i: i, 0)
