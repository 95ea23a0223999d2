"""Zero-downtime switch behind the edge proxy against today's plain
``compose up``, side by side in one run, on one sandbox host (issue 16).

    flock /work/wt/bench.lock python3 bench/run.py --proxy [--repeat 2]
    flock /work/wt/bench.lock python3 bench/proxy.py [--repeat 2] [--settle 8] [--keep]

The app is the proxy e2e app (tests/e2e/apps/proxyapp: ``/`` answers at once,
``/slow`` after 2 seconds), shipped to ONE sandbox host (Docker preinstalled)
as two environments of one project, each with its own deploy dir and compose
project:

- ``proxied``: ``proxy.routes`` (the Caddy edge proxy on port 80; a changed
  deploy starts new containers beside the old, health-checks them, switches
  the route, drains and removes the old ones);
- ``plain``: no route (``proxy: {routes: []}``), the web service publishes
  port 8000 itself: today's ``compose up``, which recreates the container.

Per mode and repeat (modes alternate first place between repeats), a changed
deploy (a new ``version`` in the release's config) runs under the load client
of the proxy e2e tests (tests/e2e/load.py: 4 clients, two always in a
2-second ``/slow`` request, two on ``/`` back to back, each request on its own
connection), with ``--settle`` seconds of load before and after it. Each
request is put in the phase its start falls in: before the ship started,
during it, after it ended. Reported per mode and phase: requests, failed
requests (any path: an error or a status other than 200) and p50/p99 latency
of ``/``; per run also the longest gap between two successful ``/`` answers.

Then the proxy's latency overhead: with both environments on the same
release, ``hey`` (Debian's ``hey``) against the proxy (port 80) and directly
against the plain environment's container (its published port 8000), the
same image and app, alternating, ``--rounds`` rounds of ``--seconds`` each,
4 connections, keep-alive off (every request a new connection on both paths,
as the load client does), once as fast as they go (``max``) and once paced
at 25 requests/s per connection (``paced``: below saturation).

The sandbox is brought up in bench/results/tmp/proxy and removed at the end
(``--keep`` leaves it). Results: bench/results/proxy.json and proxy.md, with
``uptime`` at the start, before every measured deploy and at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any, Protocol

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
PROJECT = RESULTS / "tmp" / "proxy"
APP_SRC = REPO / "tests" / "e2e" / "apps" / "proxyapp"
TAG = "bench"
# mode -> (environment, port the clients use, the inventory's additions)
MODES: dict[str, tuple[str, int, str]] = {
    "proxy": ("proxied", 80, ""),
    "compose-up": ("plain", 8000, "deploy_dir: /opt/benchplain\nproject_name: benchplain\n"
                   "proxy: {routes: []}\n"),
}
PUBLISH = {"plain": 8000}  # the plain environment's web service publishes this port
PHASES = ("before", "during", "after")


class Timed(Protocol):
    """What the summary needs of one answer (tests/e2e/load.py's ``Answer``)."""

    path: str
    start: float
    end: float

    @property
    def ok(self) -> bool: ...


def log(msg: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] proxy: {msg}\n")
    sys.stderr.flush()


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


# --------------------------------------------------------------------------
# The summary maths (pure; tests/unit/test_bench_proxy.py)


def percentile(values: Iterable[float], p: float) -> float | None:
    """The nearest-rank ``p``-th percentile (0 < p <= 100): the smallest value
    with at least p% of the values at or below it; None for no values."""
    xs = sorted(values)
    if not xs:
        return None
    if not 0 < p <= 100:
        raise ValueError(f"percentile {p} is not in (0, 100]")
    return xs[max(1, math.ceil(p / 100 * len(xs))) - 1]


def phase_of(start: float, t0: float, t1: float) -> str:
    """``before`` the deploy started at ``t0``, ``during`` it, or ``after`` it
    ended at ``t1`` (a request belongs to the phase it started in)."""
    return "before" if start < t0 else "during" if start < t1 else "after"


def longest_gap(answers: Sequence[Timed], path: str = "/") -> float:
    """The longest time between two successive successful answers on
    ``path`` (by their end): how long clients saw no success at all."""
    ends = sorted(a.end for a in answers if a.ok and a.path == path)
    return max((b - a for a, b in pairwise(ends)), default=0.0)


def summarize(answers: Sequence[Timed], t0: float, t1: float) -> dict[str, dict[str, Any]]:
    """Per phase: requests and failed requests (every path), and the p50/p99
    latency in ms of the successful ``/`` requests."""
    out: dict[str, dict[str, Any]] = {}
    for phase in PHASES:
        mine = [a for a in answers if phase_of(a.start, t0, t1) == phase]
        fast = [(a.end - a.start) * 1000 for a in mine if a.ok and a.path == "/"]
        out[phase] = {
            "requests": len(mine),
            "failed": sum(1 for a in mine if not a.ok),
            "slow_requests": sum(1 for a in mine if a.path == "/slow"),
            "fast_ok": len(fast),
            "p50_ms": percentile(fast, 50),
            "p99_ms": percentile(fast, 99),
        }
    return out


def pooled(runs: Sequence[dict[str, Any]], latencies: dict[tuple[int, str], list[float]],
           mode: str) -> dict[str, dict[str, Any]]:
    """One mode's runs added up per phase: requests and failures summed, the
    percentiles over every run's ``/`` latencies together."""
    out: dict[str, dict[str, Any]] = {}
    mine = [(i, r) for i, r in enumerate(runs) if r["mode"] == mode]
    for phase in PHASES:
        lat = [x for i, _ in mine for x in latencies.get((i, phase), [])]
        out[phase] = {
            "requests": sum(r["phases"][phase]["requests"] for _, r in mine),
            "failed": sum(r["phases"][phase]["failed"] for _, r in mine),
            "p50_ms": percentile(lat, 50),
            "p99_ms": percentile(lat, 99),
        }
    return out


HEY_LINE = re.compile(r"^\s*(\d+(?:\.\d+)?)% in (\d+(?:\.\d+)?) secs", re.M)


def parse_hey(text: str) -> dict[str, Any]:
    """hey's text report: answered requests per second (hey's own
    ``Requests/sec`` counts errors too), p50/p99 in ms (of the answered
    ones), responses, those whose status is not 200, and errors (requests
    with no response)."""
    total = re.search(r"Total:\s+([\d.]+) secs", text)
    dist = {float(p): float(s) * 1000 for p, s in HEY_LINE.findall(text) if float(p) > 0}
    codes: dict[str, int] = {}
    section = re.search(r"Status code distribution:\n(.*?)(?:\n\n|\Z)", text, re.S)
    for m in re.finditer(r"\[(\d+)\]\s+(\d+) responses", section.group(1) if section else ""):
        codes[m.group(1)] = codes.get(m.group(1), 0) + int(m.group(2))
    errors = 0
    section = re.search(r"Error distribution:\n(.*?)(?:\n\n|\Z)", text, re.S)
    for m in re.finditer(r"^\s*\[(\d+)\]", section.group(1) if section else "", re.M):
        errors += int(m.group(1))
    seconds = float(total.group(1)) if total else 0.0
    return {"rps": codes.get("200", 0) / seconds if seconds > 0 else None,
            "p50_ms": dist.get(50.0), "p99_ms": dist.get(99.0),
            "responses": sum(codes.values()),
            "non_200": sum(n for c, n in codes.items() if c != "200"), "errors": errors}


# --------------------------------------------------------------------------
# The sandbox and the two environments


def deployer(*args: str, check: bool = True,
             timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(REPO)}
    env.pop("GITHUB_ACTIONS", None)
    p = subprocess.run([sys.executable, "-m", "deployer", "-C", str(PROJECT), *args],
                       capture_output=True, text=True, env=env, timeout=timeout)
    if check and p.returncode != 0:
        raise SystemExit(f"deployer {' '.join(args)} failed (exit {p.returncode}):\n"
                         f"{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    return p


def configure(version: str) -> None:
    """Both environments' inventories: the sandbox's, plus each mode's keys
    and ``version`` (what a changed deploy changes)."""
    base = (PROJECT / "inventories" / "sandbox.yaml").read_text()
    for env, _, extra in MODES.values():
        vars_ = {"version": version, **({"publish": PUBLISH[env]} if env in PUBLISH else {})}
        (PROJECT / "inventories" / f"{env}.yaml").write_text(
            base.rstrip("\n") + "\n# bench/proxy.py\n" + extra + "vars: " + json.dumps(vars_)
            + "\n")


def setup(base_image: str) -> Any:
    """Sandbox up (one host, Docker preinstalled), the app copied in, and a
    first, untimed ship of each environment (builds and pushes the image)."""
    from deployer.sandbox import manager

    if PROJECT.exists():
        shutil.rmtree(PROJECT / "templates", ignore_errors=True)
    PROJECT.mkdir(parents=True, exist_ok=True)
    shutil.copytree(APP_SRC, PROJECT, dirs_exist_ok=True)
    log(f"sandbox up: 1 host with Docker ({base_image}); {uptime()}")
    try:
        info = manager.up(PROJECT, hosts=1, base_image=base_image, with_docker=True,
                          log=lambda m: log(f"  sandbox: {m}"))
    except Exception as e:  # a subnet race with another sandbox: retry once
        log(f"sandbox up failed ({type(e).__name__}: {e}); retrying once")
        info = manager.up(PROJECT, hosts=1, base_image=base_image, with_docker=True,
                          log=lambda m: log(f"  sandbox: {m}"))
    configure("v1")
    for mode, (env, _, _) in MODES.items():
        log(f"{mode}: first ship ({env}, v1, untimed)")
        ship(env, build=True)
    return info


def ship(env: str, build: bool = False) -> tuple[float, int, str]:
    """One ship: (seconds, exit code, the host's result)."""
    args = ["-o", "json", "ship", env, "--tag", TAG] + ([] if build else ["--skip-build"])
    started = time.monotonic()
    p = deployer(*args, check=build)
    took = time.monotonic() - started
    try:
        (host,) = json.loads(p.stdout)["hosts"]
        result = str(host["result"])
    except (ValueError, KeyError, TypeError):
        result = f"no report: {p.stderr.strip()[-300:]}"
    return took, p.returncode, result


def deploy_under_load(address: str, mode: str, version: str, settle: float,
                      latencies: dict[tuple[int, str], list[float]], index: int
                      ) -> dict[str, Any]:
    """One changed deploy of ``mode`` to ``version`` under load."""
    sys.path.insert(0, str(REPO / "tests"))
    from e2e.load import Load

    env, port, _ = MODES[mode]
    configure(version)
    load_avg = uptime()
    log(f"{mode}: changed deploy to {version} under load ({load_avg})")
    with Load([address], port=port, settle=settle) as load:
        t0 = time.monotonic()
        took, code, result = ship(env)
        t1 = time.monotonic()
    phases = summarize(load.answers, t0, t1)
    for phase in PHASES:
        latencies[(index, phase)] = [(a.end - a.start) * 1000 for a in load.answers
                                     if a.ok and a.path == "/" and
                                     phase_of(a.start, t0, t1) == phase]
    errors = sorted({a.error.split(":")[0] for a in load.answers if not a.ok})
    row = {"mode": mode, "version": version, "ship_s": round(took, 2), "exit": code,
           "result": result, "uptime": load_avg, "phases": phases,
           "longest_gap_s": round(longest_gap(load.answers), 2),
           "versions_seen": sorted(load.versions()), "error_kinds": errors}
    log(f"{mode}: {result} in {took:.1f}s; failed "
        + ", ".join(f"{p} {phases[p]['failed']}/{phases[p]['requests']}" for p in PHASES)
        + f"; longest gap {row['longest_gap_s']}s")
    return row


#: hey's load kinds: as fast as 4 connections go (throughput, latency under
#: saturation), and paced at PACED_QPS per connection (latency well below it).
PACED_QPS = 25
LOAD_KINDS = {"max": [], "paced": ["-q", str(PACED_QPS)]}


def overhead(address: str, seconds: int, rounds: int) -> dict[str, Any]:
    """hey against the proxy and directly against the container, alternating,
    for each kind of load."""
    hey = shutil.which("hey")
    if hey is None:
        raise SystemExit("hey not found: apt install hey (see bench/README.md)")
    targets = {"proxy": f"http://{address}:{MODES['proxy'][1]}/",
               "direct": f"http://{address}:{MODES['compose-up'][1]}/"}
    runs: list[dict[str, Any]] = []
    for r in range(rounds):
        for kind, extra in LOAD_KINDS.items():
            order = list(targets) if r % 2 == 0 else list(reversed(targets))
            for name in order:
                load_avg = uptime()
                p = subprocess.run([hey, "-z", f"{seconds}s", "-c", "4", *extra,
                                    "-disable-keepalive", targets[name]],
                                   capture_output=True, text=True, timeout=seconds + 60)
                res = {"path": name, "kind": kind, "round": r + 1, "uptime": load_avg,
                       **parse_hey(p.stdout)}
                log(f"hey {kind} {name}: {fmt(res['rps'], '.0f')} req/s, p50 "
                    f"{fmt(res['p50_ms'])} ms, p99 {fmt(res['p99_ms'])} ms, errors "
                    f"{res['errors']}, non-200 {res['non_200']}")
                runs.append(res)

    def median(kind: str, path: str, key: str) -> float | None:
        xs = [x[key] for x in runs if (x["kind"], x["path"]) == (kind, path)
              and x[key] is not None]
        return statistics.median(xs) if xs else None

    summary = {kind: {path: {k: median(kind, path, k) for k in ("rps", "p50_ms", "p99_ms")}
                      | {"errors": sum(x["errors"] + x["non_200"] for x in runs
                                       if (x["kind"], x["path"]) == (kind, path))}
                      for path in targets} for kind in LOAD_KINDS}
    hey_version = "hey (Debian " + (subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "hey"], capture_output=True, text=True
    ).stdout or "?") + ")"
    return {"tool": hey_version, "seconds": seconds, "rounds": rounds, "connections": 4,
            "paced_qps_per_connection": PACED_QPS, "keepalive": False, "runs": runs,
            "summary": summary}


# --------------------------------------------------------------------------
# Output


def fmt(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def markdown(data: dict[str, Any]) -> str:
    m = data["meta"]
    lines = [
        "# Changed deploy behind the edge proxy vs plain `compose up`",
        "",
        f"`{m['command']}`, {m['started']} to {m['finished']}, on {m['machine']}.",
        f"Load (`uptime`) at the start: {m['uptime']['start']}; at the end: "
        f"{m['uptime']['end']}.",
        "",
        f"One sandbox host (Docker preinstalled), the proxy e2e app, {m['repeat']} changed "
        f"deploy(s) per mode under the e2e load client (4 clients: 2 always in a 2-second "
        f"`/slow`, 2 on `/` back to back, a new connection per request), {m['settle']} s of "
        "load before and after each deploy. A request counts in the phase it started in. "
        "Failed: any path, an error or a status other than 200. Latency: successful `/` "
        "requests, all runs of the mode together.",
        "",
        "| mode | phase | requests | failed | p50 `/` (ms) | p99 `/` (ms) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for mode in MODES:
        for phase in PHASES:
            s = data["pooled"][mode][phase]
            lines.append(f"| {mode} | {phase} | {s['requests']} | {s['failed']} | "
                         f"{fmt(s['p50_ms'])} | {fmt(s['p99_ms'])} |")
    lines += ["", "Per deploy:", "",
              "| mode | to | ship (s) | result | failed (before/during/after) | "
              "longest gap without a `/` answer (s) | errors seen | uptime before |",
              "|---|---|---:|---|---|---:|---|---|"]
    for r in data["runs"]:
        f = "/".join(str(r["phases"][p]["failed"]) for p in PHASES)
        lines.append(f"| {r['mode']} | {r['version']} | {r['ship_s']:.1f} | {r['result']} "
                     f"(exit {r['exit']}) | {f} | {r['longest_gap_s']:.2f} | "
                     f"{', '.join(r['error_kinds']) or '-'} | "
                     f"{r['uptime'].split('load average:')[-1].strip()} |")
    o = data.get("overhead")
    if o:
        lines += [
            "", "## The proxy's latency overhead", "",
            f"{o['tool']}, {o['connections']} connections, keep-alive off, {o['rounds']} "
            f"round(s) of {o['seconds']} s per path and load, alternating; medians over "
            "rounds. `proxy`: the Caddy edge proxy on port 80 in front of the proxied "
            "environment's container; `direct`: the plain environment's container (same "
            "image and release content) on its published port 8000, same host. Load `max`: "
            "as fast as the connections go; `paced`: "
            f"{o['paced_qps_per_connection']} requests/s per connection "
            f"({o['paced_qps_per_connection'] * o['connections']}/s in all).",
            "",
            "| load | path | requests/s | p50 (ms) | p99 (ms) | errors + non-200 |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for kind, by_path in o["summary"].items():
            for path in ("direct", "proxy"):
                x = by_path[path]
                lines.append(f"| {kind} | {path} | {fmt(x['rps'], '.0f')} | "
                             f"{fmt(x['p50_ms'])} | {fmt(x['p99_ms'])} | {x['errors']} |")
        lines.append("")
        for kind, by_path in o["summary"].items():
            d, p = by_path["direct"], by_path["proxy"]
            diffs = [f"{k.replace('_ms', '')} {p[k] - d[k]:+.1f} ms" for k in ("p50_ms", "p99_ms")
                     if p[k] is not None and d[k] is not None]
            if diffs:
                lines.append(f"- Overhead of the proxy hop, `{kind}` load (proxy minus "
                             f"direct): {', '.join(diffs)}.")
        lines += ["", "Per round: " + "; ".join(
            f"{x['kind']} {x['path']} {fmt(x['rps'], '.0f')} req/s p50 {fmt(x['p50_ms'])} ms "
            f"(load {x['uptime'].split('load average:')[-1].strip()})" for x in o["runs"])]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Main


def main(repeat: int = 2, settle: float = 8.0, seconds: int = 10, rounds: int = 2,
         base_image: str = "debian:bookworm", out: Path = RESULTS, keep: bool = False,
         command: str = "") -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    data: dict[str, Any] = {"meta": {
        "command": command or "python3 bench/proxy.py", "started": started,
        "machine": f"{platform.node()} {platform.platform()}, {os.cpu_count()} CPUs",
        "repeat": repeat, "settle": settle, "uptime": {"start": uptime()}}, "runs": []}
    latencies: dict[tuple[int, str], list[float]] = {}
    out.mkdir(parents=True, exist_ok=True)
    try:
        info = setup(base_image)
        address = info.hosts[0].address
        for r in range(repeat):
            order = list(MODES) if r % 2 == 0 else list(reversed(MODES))
            for mode in order:
                row = deploy_under_load(address, mode, f"v{r + 2}", settle, latencies,
                                        len(data["runs"]))
                data["runs"].append(row)
        data["overhead"] = overhead(address, seconds, rounds)
    finally:
        if not keep:
            from deployer.sandbox import manager

            log("sandbox down")
            manager.down(PROJECT)
    data["meta"]["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    data["meta"]["uptime"]["end"] = uptime()
    data["pooled"] = {mode: pooled(data["runs"], latencies, mode) for mode in MODES}
    (out / "proxy.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / "proxy.md").write_text(markdown(data))
    sys.stdout.write(markdown(data))
    return data


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=2, help="changed deploys per mode")
    ap.add_argument("--settle", type=float, default=8.0,
                    help="seconds of load before and after each deploy")
    ap.add_argument("--seconds", type=int, default=10, help="length of one hey round")
    ap.add_argument("--rounds", type=int, default=2, help="hey rounds per path")
    ap.add_argument("--base-image", default="debian:bookworm", help="sandbox host image")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where results go")
    ap.add_argument("--keep", action="store_true", help="leave the sandbox up at the end")
    a = ap.parse_args()
    main(a.repeat, a.settle, a.seconds, a.rounds, a.base_image, a.out, a.keep,
         "python3 " + " ".join(["bench/proxy.py", *sys.argv[1:]]))


if __name__ == "__main__":
    cli()
