"""A changed ship with ``registry: none`` next to the same ship through the
sandbox registry, to 1, 4 and 8 hosts, in the same run (issue 17).

    python bench/no_registry.py [--hosts 1,4,8] [--repeat 3] [--down]

The project (bench/results/tmp/noreg, a copy of bench/app) has two
environments on the same sandbox hosts (Docker preinstalled):
``sandbox`` (the sandbox's TLS registry, as written by ``sandbox up``) and
``noreg`` (the same inventory with ``registry: none``). Images ``v1`` and
``v2`` (v2 differs by one small top layer) are built once and pushed (or put
into the blob store) once, untimed; every ship is ``--skip-build``, so the
time is the ship itself.

For each N, for each mode in turn: an untimed ship of ``v1`` (so the hosts
have the base layers as that mode names them), then ``--repeat`` timed
changed ships alternating ``v2``, ``v1``, ``v2``... Reported: the median
wall time of the changed ships and the median bytes each host took in on its
network interface (``/sys/class/net/*/statistics/rx_bytes`` without ``lo``),
with ``uptime`` before, after and after each cell.
Results: bench/results/no-registry.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# bench/run.py: the sandbox with bench/app, deployer's environment, the log,
# docker exec into a host and the load, shared with the main benchmark.
from run import REPO, RESULTS, WORK, app_sandbox, deployer_env, dexec, pmap, uptime
from run import log as bench_log

PROJECT = WORK / "noreg"
MODES = {"registry": "sandbox", "none": "noreg"}  # mode -> environment
# Each environment owns its deploy dir and compose project on the hosts
# (README: two environments on one host); both publish the app's port.
PROJECTS = {"sandbox": "benchweb", "noreg": "benchweb-noreg"}
RX = ("t=0; for i in /sys/class/net/*; do [ \"${i##*/}\" = lo ] && continue; "
      "t=$((t + $(cat $i/statistics/rx_bytes))); done; echo $t")


def log(msg: str) -> None:
    bench_log(f"no-registry: {msg}")


def deployer(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    # This checkout's deployer, whatever is installed.
    env = {**deployer_env(), "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-m", "deployer", "-C", str(PROJECT), *args],
                       capture_output=True, text=True, env=env, timeout=1800)
    if check and p.returncode != 0:
        raise SystemExit(f"deployer {' '.join(args)} failed (exit {p.returncode}):\n"
                         f"{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return p


def rx(hosts: list[Any]) -> dict[str, int]:
    return dict(zip((h.name for h in hosts),
                    pmap(lambda h: int(dexec(h.container, RX)), hosts), strict=True))


def setup(max_hosts: int, base_image: str) -> Any:
    info = app_sandbox(PROJECT, max_hosts, base_image)
    inv = (PROJECT / "inventories" / "sandbox.yaml").read_text().splitlines()
    (PROJECT / "inventories" / "noreg.yaml").write_text(
        "\n".join("registry: none" if x.startswith("registry:") else x for x in inv)
        + "\ndeploy_dir: /opt/benchweb-noreg\nproject_name: benchweb-noreg\n")
    for version in ("v1", "v2"):
        (PROJECT / "site" / "version.txt").write_text(version + "\n")
        for mode, env in MODES.items():
            deployer("build", env, "--tag", version)
            p = deployer("-o", "json", "push", env, "--tag", version)
            log(f"{mode} {version}: {json.loads(p.stdout)['images']['web']}")
    return info


def ship(env: str, version: str, hosts: list[Any]) -> tuple[float, dict[str, int]]:
    """One ship; (seconds, bytes each host took in). Fails loudly unless
    every host deployed."""
    limit = ",".join(h.name for h in hosts)
    before = rx(hosts)
    started = time.monotonic()
    p = deployer("-o", "json", "ship", env, "--skip-build", "--tag", version,
                 "--limit", limit, check=False)
    took = time.monotonic() - started
    after = rx(hosts)
    try:
        results = {h["host"]: h["result"] for h in json.loads(p.stdout)["hosts"]}
    except (ValueError, KeyError):
        results = {}
    if p.returncode != 0 or set(results.values()) != {"deployed"}:
        raise SystemExit(f"ship {env} {version} to {limit}: exit {p.returncode} {results}\n"
                         f"{p.stderr[-2000:]}")
    return took, {n: after[n] - before[n] for n in after}


def measure(info: Any, ns: list[int], repeat: int, partial: Path) -> list[dict[str, Any]]:
    """Every cell's rows, also written to ``partial`` as they come (so a run
    cut short keeps what it measured)."""
    rows: list[dict[str, Any]] = []
    for n in ns:
        hosts = list(info.hosts)[:n]
        for mode, env in MODES.items():
            # Untimed: the other mode's containers go, so the port is free.
            other = next(p for e, p in PROJECTS.items() if e != env)
            free = (f"docker ps -aq --filter label=com.docker.compose.project={other} "
                    "| xargs -r docker rm -f")
            pmap(lambda h, script=free: dexec(h.container, script), hosts)
            log(f"N={n} {mode}: warm-up ship of v1")
            ship(env, "v1", hosts)
            times: list[float] = []
            taken: list[int] = []
            for i in range(repeat):
                version = "v2" if i % 2 == 0 else "v1"
                took, got = ship(env, version, hosts)
                times.append(took)
                taken.extend(got.values())
                log(f"N={n} {mode}: changed ship to {version}: {took:.2f}s, "
                    f"median {statistics.median(got.values()):.0f} bytes in per host")
            rows.append({"hosts": n, "mode": mode, "seconds": statistics.median(times),
                         "runs": times, "rx_bytes_per_host": statistics.median(taken),
                         "uptime": uptime()})
            partial.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def _load(row: dict[str, Any]) -> str:
    """The 1-minute load average from a row's ``uptime`` line."""
    return row["uptime"].rsplit("load average:", 1)[-1].split(",")[0].strip()


def markdown(data: dict[str, Any]) -> str:
    lines = [
        "# Changed ship: `registry: none` vs the sandbox registry",
        "",
        f"{data['when']}; {data['repeat']} changed ship(s) per cell (median; every run "
        "in no-registry.json), `--skip-build`, hosts with Docker preinstalled.",
        "",
        f"- `uptime` before: {data['uptime'][0]}",
        f"- `uptime` after: {data['uptime'][1]}",
        "",
        "| hosts | through the registry | `registry: none` | ratio | bytes in per host "
        "(registry / none) | load (1 min) after the cell (registry / none) |",
        "|---|---|---|---|---|---|",
    ]
    by = {(r["hosts"], r["mode"]): r for r in data["rows"]}
    for n in data["ns"]:
        reg, none = by[(n, "registry")], by[(n, "none")]
        lines.append(f"| {n} | {reg['seconds']:.2f} s | {none['seconds']:.2f} s | "
                     f"{none['seconds'] / reg['seconds']:.2f}x | "
                     f"{reg['rx_bytes_per_host']:,.0f} / {none['rx_bytes_per_host']:,.0f} | "
                     f"{_load(reg)} / {_load(none)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", default="1,4,8", help="host counts, e.g. 1,4,8")
    ap.add_argument("--repeat", type=int, default=3, help="timed changed ships per cell")
    ap.add_argument("--base-image", default="debian:bookworm", help="sandbox host image")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where results go")
    ap.add_argument("--down", action="store_true", help="remove the sandbox at the end")
    args = ap.parse_args()
    ns = sorted({int(x) for x in args.hosts.split(",") if x.strip()})
    sys.path.insert(0, str(REPO))  # this checkout's deployer for the sandbox, too
    before = uptime()
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    info = setup(max(ns), args.base_image)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        rows = measure(info, ns, args.repeat, args.out / "no-registry.partial.json")
    finally:
        if args.down:
            from deployer.sandbox import manager

            manager.down(PROJECT)
    data = {"when": f"{started}-{time.strftime('%H:%M UTC', time.gmtime())}", "ns": ns,
            "repeat": args.repeat, "uptime": [before, uptime()], "rows": rows}
    (args.out / "no-registry.json").write_text(json.dumps(data, indent=2) + "\n")
    (args.out / "no-registry.md").write_text(markdown(data))
    (args.out / "no-registry.partial.json").unlink(missing_ok=True)
    sys.stdout.write(markdown(data))


if __name__ == "__main__":
    main()
