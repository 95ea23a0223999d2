"""bench/proxy.py's summary maths: percentiles, phases, failure counting,
the longest gap, pooling over runs and reading hey's report."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

BENCH_PROXY = Path(__file__).resolve().parents[2] / "bench" / "proxy.py"
spec = importlib.util.spec_from_file_location("bench_proxy", BENCH_PROXY)
assert spec is not None and spec.loader is not None
bp = importlib.util.module_from_spec(spec)
sys.modules["bench_proxy"] = bp
spec.loader.exec_module(bp)


@dataclass
class A:
    path: str
    start: float
    end: float
    good: bool = True

    @property
    def ok(self) -> bool:
        return self.good


def test_percentile_is_nearest_rank() -> None:
    xs = list(range(100, 0, -1))  # 1..100, unsorted
    assert bp.percentile(xs, 50) == 50
    assert bp.percentile(xs, 99) == 99
    assert bp.percentile(xs, 100) == 100
    assert bp.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert bp.percentile([1.0, 2.0, 3.0, 4.0], 99) == 4.0  # ceil(3.96) = the 4th
    assert bp.percentile([7.5], 1) == 7.5
    assert bp.percentile([], 50) is None
    with pytest.raises(ValueError):
        bp.percentile([1.0], 0)


def test_a_request_counts_in_the_phase_it_started_in() -> None:
    assert bp.phase_of(9.99, 10, 20) == "before"
    assert bp.phase_of(10, 10, 20) == "during"
    assert bp.phase_of(19.99, 10, 20) == "during"
    assert bp.phase_of(20, 10, 20) == "after"


def test_summarize_counts_failures_of_every_path_and_times_only_good_fast_ones() -> None:
    answers = [
        A("/", 1.0, 1.010),                 # before, 10 ms
        A("/", 2.0, 2.030),                 # before, 30 ms
        A("/slow", 8.0, 12.0),              # before (started before t0=10), 4 s: not timed
        A("/", 10.0, 10.5, good=False),     # during, failed: counted, not timed
        A("/slow", 11.0, 11.1, good=False),  # during, failed
        A("/", 12.0, 12.020),               # during, 20 ms
        A("/", 21.0, 21.040),               # after, 40 ms
    ]
    s = bp.summarize(answers, 10.0, 20.0)
    assert s["before"]["requests"] == 3 and s["before"]["failed"] == 0
    assert s["before"]["slow_requests"] == 1 and s["before"]["fast_ok"] == 2
    assert s["before"]["p50_ms"] == pytest.approx(10)
    assert s["before"]["p99_ms"] == pytest.approx(30)
    assert s["during"]["requests"] == 3 and s["during"]["failed"] == 2
    assert s["during"]["fast_ok"] == 1 and s["during"]["p50_ms"] == pytest.approx(20)
    assert s["after"] == {"requests": 1, "failed": 0, "slow_requests": 0, "fast_ok": 1,
                          "p50_ms": pytest.approx(40), "p99_ms": pytest.approx(40)}


def test_an_empty_phase_has_no_percentiles() -> None:
    s = bp.summarize([A("/", 1.0, 1.1)], 10.0, 20.0)
    assert s["during"] == {"requests": 0, "failed": 0, "slow_requests": 0, "fast_ok": 0,
                           "p50_ms": None, "p99_ms": None}


def test_longest_gap_between_successes_ignores_failures_and_slow_requests() -> None:
    answers = [A("/", 0, 1.0), A("/", 1, 1.5), A("/", 2, 2.0, good=False),
               A("/slow", 2, 3.0), A("/", 4, 4.5), A("/", 4.5, 4.6)]
    assert bp.longest_gap(answers) == pytest.approx(3.0)  # 1.5 -> 4.5
    assert bp.longest_gap([A("/", 0, 1.0)]) == 0.0


def test_pooled_adds_runs_of_one_mode_and_pools_their_latencies() -> None:
    def run(mode: str, failed: int) -> dict:
        return {"mode": mode, "phases": {p: {"requests": 10, "failed": failed if p == "during"
                                             else 0} for p in bp.PHASES}}

    runs = [run("proxy", 0), run("compose-up", 5), run("proxy", 1)]
    lat = {(0, "during"): [1.0, 2.0], (1, "during"): [100.0], (2, "during"): [3.0, 4.0]}
    p = bp.pooled(runs, lat, "proxy")
    assert p["during"]["requests"] == 20 and p["during"]["failed"] == 1
    assert p["during"]["p50_ms"] == 2.0 and p["during"]["p99_ms"] == 4.0  # not compose-up's
    assert p["before"]["p50_ms"] is None
    assert bp.pooled(runs, lat, "compose-up")["during"]["failed"] == 5


# A real report of Debian's hey 0.1.4 (a server stopped during the run), its histogram
# cut short and a 502 line added.
HEY = """
Summary:
  Total:\t3.0429 secs
  Slowest:\t0.0970 secs
  Fastest:\t0.0023 secs
  Average:\t0.0116 secs
  Requests/sec:\t1436.1438
  \n
Response time histogram:
  0.002 [1]\t|
  0.012 [193]\t|■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■


Latency distribution:
  10% in 0.0030 secs
  25% in 0.0046 secs
  50% in 0.0060 secs
  75% in 0.0085 secs
  90% in 0.0285 secs
  95% in 0.0601 secs
  99% in 0.0966 secs

Details (average, fastest, slowest):
  DNS+dialup:\t0.0004 secs, 0.0023 secs, 0.0970 secs
  resp read:\t0.0021 secs, 0.0000 secs, 0.0335 secs

Status code distribution:
  [200]\t243 responses
  [502]\t7 responses

Error distribution:
  [1]\tGet "http://127.0.0.1:18777/": EOF
  [4124]\tGet "http://127.0.0.1:18777/": dial tcp 127.0.0.1:18777: connect: connection refused
  [1]\tGet "http://127.0.0.1:18777/": read tcp 127.0.0.1:59074->127.0.0.1:18777: read: \
connection reset by peer
"""


def test_parse_hey_counts_answers_and_errors_apart() -> None:
    h = bp.parse_hey(HEY)
    assert h["p50_ms"] == pytest.approx(6.0) and h["p99_ms"] == pytest.approx(96.6)
    assert h["responses"] == 250 and h["non_200"] == 7 and h["errors"] == 4126
    # hey's Requests/sec (1436) counts the errors; ours is 200 answers per second
    assert h["rps"] == pytest.approx(243 / 3.0429)


def test_parse_hey_without_enough_requests_for_p99() -> None:
    # hey prints "0% in 0.0000 secs" for the percentiles it has no value for
    text = HEY.replace("  99% in 0.0966 secs", "  0% in 0.0000 secs")
    assert bp.parse_hey(text)["p99_ms"] is None
    assert bp.parse_hey("")["rps"] is None
