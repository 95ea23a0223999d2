"""Copying a directory of small files to N hosts: deployer's release upload
against a ``tar | ssh`` floor, measured in the same run (issue 14).

    python bench/run.py --copy-tree [--hosts 8] [--files 1000] [--repeat 5]

The project (bench/results/tmp/copytree: its own git repository, the tree
untracked) has one ``files:``
entry ``{copy: tree}``: ``--files`` files of 200 to 2,200 bytes in 20
folders. Per repeat, in turn (so load drift hits both alike):

- **floor**: N parallel ``tar -C project -cf - tree | ssh deploy@host 'mkdir
  -p DIR && tar -x -C DIR'`` (OpenSSH, ControlMaster off): one connection
  and one stream per host, nothing else;
- **deployer**: a fresh ``python`` process doing what ``ship`` does for its
  upload step (``HostShip._upload``): load the project, build the plan (walk
  the tree, hash every file), open one SSH connection per host in parallel,
  send the release (the tree, the compose file, manifest.json) as one tar
  stream into ``<id>.partial`` and rename it (``receive_release`` +
  ``finalize``: two commands per host).

Reported: wall time of each (deployer's includes the interpreter start and
imports, as a user pays them) and, for deployer, the time after imports
split into plan and upload. Hosts are cleaned between runs through ``docker
exec`` (untimed). The target: deployer at most 1.5x the floor.

``copy_tree.py --deployer-once PROJECT RELEASE`` is the deployer side (one
JSON line of timings on stdout).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
WORK = RESULTS / "tmp"
PROJECT = WORK / "copytree"
APP = "copytree"
FLOOR_DIR = "/home/deploy/copytree-floor"
TARGET = 1.5


def log(msg: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] copy-tree: {msg}\n")
    sys.stderr.flush()


def make_project(files: int) -> Path:
    """A deployer project with a tree of ``files`` small files (the same
    bytes every time: a fixed seed)."""
    (PROJECT / "templates").mkdir(parents=True, exist_ok=True)
    (PROJECT / "deployer.yaml").write_text(
        f"app: {APP}\n"
        "files:\n"
        "  - {template: templates/docker-compose.yaml.j2, dest: docker-compose.yaml}\n"
        "  - {copy: tree}\n"
        "compose_file: docker-compose.yaml\n"
    )
    (PROJECT / "templates" / "docker-compose.yaml.j2").write_text(
        "services:\n  web:\n    image: python:3.12-slim\n"
        "    volumes: ['./tree:/srv/tree:ro']\n"
    )
    tree = PROJECT / "tree"
    if tree.exists():
        subprocess.run(["rm", "-rf", str(tree)], check=True)
    if not (PROJECT / ".git").exists():
        # Its own repository, as a user's project would be (the tree is
        # untracked, which ships; bench/results/tmp is ignored by this repo).
        subprocess.run(["git", "init", "-q", str(PROJECT)], check=True)
    rnd = random.Random(14)  # noqa: S311 - fixed test data, not a secret
    for i in range(files):
        p = tree / f"d{i % 20:02d}" / f"f{i:04d}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rnd.randbytes(rnd.randint(200, 2200)))
    return PROJECT


def dexec(container: str, script: str) -> None:
    subprocess.run(["docker", "exec", container, "sh", "-c", script], check=True,
                   capture_output=True)


def clean(hosts: list[Any]) -> None:
    for h in hosts:
        dexec(h.container, f"rm -rf {FLOOR_DIR} /opt/{APP}/releases/* && "
              f"mkdir -p /opt/{APP}/releases /opt/{APP}/shared && chown -R deploy /opt/{APP}")


def floor(info: Any, hosts: list[Any]) -> float:
    opts = (f"-i {info.ssh_key} -o UserKnownHostsFile={info.known_hosts} "
            "-o StrictHostKeyChecking=yes -o BatchMode=yes -o ControlMaster=no "
            "-o ControlPath=none -o LogLevel=ERROR")
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            ["sh", "-c", f"tar -C {PROJECT} -cf - tree | ssh {opts} deploy@{h.address} "
             f"'mkdir -p {FLOOR_DIR} && tar -x -C {FLOOR_DIR}'"],
            stderr=subprocess.PIPE)
        for h in hosts
    ]
    errs = [(p.wait(), p.stderr.read() if p.stderr else b"") for p in procs]
    took = time.monotonic() - started
    bad = [e for rc, e in errs if rc != 0]
    if bad:
        raise SystemExit(f"floor failed: {bad[0][-500:]!r}")
    return took


def deployer(release: str, n: int) -> dict[str, Any]:
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(BENCH.parent)}
    started = time.monotonic()
    p = subprocess.run([sys.executable, str(Path(__file__)), "--deployer-once", str(PROJECT),
                        release, str(n)], capture_output=True, text=True, env=env)
    took = time.monotonic() - started
    if p.returncode != 0:
        raise SystemExit(f"deployer upload failed:\n{p.stdout}\n{p.stderr[-2000:]}")
    return {"wall_s": took, **json.loads(p.stdout.strip().splitlines()[-1])}


def deployer_once(project_dir: str, release_id: str, n: int) -> None:
    """The deployer side, in its own process: what ship's upload step does."""
    t0 = time.monotonic()
    from concurrent.futures import ThreadPoolExecutor

    from deployer.commands import release
    from deployer.config import load_project
    from deployer.deploy.ship import Counting
    from deployer.plan import build_plan, image_refs
    from deployer.release_tar import release_files, tar_stream
    from deployer.remote.executor import SSHExecutor

    t_import = time.monotonic()
    project = load_project(Path(project_dir), "sandbox")
    plan = build_plan(project, project.hosts[:n], image_refs(project, "bench"), release_id,
                      "bench")
    t_plan = time.monotonic()

    def one(hp: Any) -> tuple[int, int, int]:
        with SSHExecutor(hp.host) as ssh:
            ex = Counting(ssh)
            files = release_files(hp, hp.manifest_bytes("bench", "now"))
            ex.stream_in(release.receive_release(project.deploy_dir, release_id),
                         tar_stream(files, hp.dirs))
            ex.run(release.finalize(project.deploy_dir, release_id, "2026-01-01T00:00:00Z"))
            return ex.commands, ex.bytes_uploaded, len(files)

    with ThreadPoolExecutor(max_workers=len(plan.hosts)) as pool:
        per = list(pool.map(one, plan.hosts))
    t_end = time.monotonic()
    print(json.dumps({
        "import_s": t_import - t0, "plan_s": t_plan - t_import, "upload_s": t_end - t_plan,
        "after_import_s": t_end - t_import, "commands_per_host": per[0][0],
        "bytes_per_host": per[0][1], "files_per_host": per[0][2],
    }))


def run(info: Any, n: int, files: int, repeat: int, out: Path) -> dict[str, Any]:
    hosts = list(info.hosts)[:n]
    if len(hosts) < n:
        raise SystemExit(f"the sandbox has {len(hosts)} hosts, {n} needed")
    runs: list[dict[str, Any]] = []
    for rep in range(1, repeat + 1):
        clean(hosts)
        f = floor(info, hosts)
        clean(hosts)
        d = deployer(f"bench-{rep}", n)
        runs.append({"repeat": rep, "floor_s": f, **{f"deployer_{k}": v for k, v in d.items()},
                     "ratio": d["wall_s"] / f, "load": os.getloadavg()[0]})
        log(f"repeat {rep}: floor {f:.2f}s, deployer {d['wall_s']:.2f}s "
            f"(after imports {d['after_import_s']:.2f}s: plan {d['plan_s']:.2f}s, "
            f"upload {d['upload_s']:.2f}s)")
    clean(hosts)

    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    summary = {
        "floor_s": med("floor_s"),
        "deployer_wall_s": med("deployer_wall_s"),
        "deployer_after_import_s": med("deployer_after_import_s"),
        "deployer_import_s": med("deployer_import_s"),
        "deployer_plan_s": med("deployer_plan_s"),
        "deployer_upload_s": med("deployer_upload_s"),
        "commands_per_host": runs[-1]["deployer_commands_per_host"],
        "bytes_per_host": runs[-1]["deployer_bytes_per_host"],
        "files_per_host": runs[-1]["deployer_files_per_host"],
    }
    summary["ratio_wall"] = summary["deployer_wall_s"] / summary["floor_s"]
    # Floor and deployer run back to back, so a load spike hits one pair:
    # the median of the pairs' ratios is steadier than the ratio of medians.
    summary["median_pair_ratio"] = med("ratio")
    summary["ratio_after_import"] = summary["deployer_after_import_s"] / summary["floor_s"]
    data = {
        "meta": {"hosts": n, "files": files, "repeat": repeat, "target": TARGET,
                 "started": runs and time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                 "machine": f"{os.uname().nodename}, {os.cpu_count()} CPUs",
                 "load": os.getloadavg()[0]},
        "runs": runs,
        "summary": summary,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "copy-tree.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / "copy-tree.md").write_text(markdown(data))
    return data


def markdown(data: dict[str, Any]) -> str:
    m, s = data["meta"], data["summary"]
    ok = "met" if max(s["ratio_wall"], s["median_pair_ratio"]) <= TARGET else "NOT met"
    lines = [
        f"# Copying {m['files']} small files to {m['hosts']} hosts",
        "",
        f"`python bench/run.py --copy-tree` ({m['started']}, {m['machine']}, load "
        f"{m['load']:.2f}); medians of {m['repeat']} runs, floor and deployer in turn.",
        "",
        "| | seconds | x floor |",
        "|---|---:|---:|",
        f"| floor: N parallel `tar -cf - tree \\| ssh host 'tar -x'` | {s['floor_s']:.2f} | 1.00 |",
        f"| deployer, whole process (interpreter start and imports included) | "
        f"{s['deployer_wall_s']:.2f} | {s['ratio_wall']:.2f} |",
        f"| deployer after imports (plan + connect + upload) | "
        f"{s['deployer_after_import_s']:.2f} | {s['ratio_after_import']:.2f} |",
        f"| of which: imports | {s['deployer_import_s']:.2f} | |",
        f"| of which: plan (walk the tree, hash {m['files']} files) | "
        f"{s['deployer_plan_s']:.2f} | |",
        f"| of which: connect + stream + rename, {m['hosts']} hosts in parallel | "
        f"{s['deployer_upload_s']:.2f} | |",
        "",
        f"Per host: {s['commands_per_host']} commands (unpack the tar stream into "
        f"`<id>.partial`, rename), {s['bytes_per_host']:,} bytes streamed for "
        f"{s['files_per_host']} files (the tree, the compose file, manifest.json).",
        "",
        f"Target (at most {TARGET}x the floor, whole process): **{ok}** "
        f"({s['ratio_wall']:.2f}x the floor's median; median of the per-repeat ratios "
        f"{s['median_pair_ratio']:.2f}x).",
        "",
        "| repeat | floor s | deployer s | ratio | after imports s | plan s | upload s | load |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in data["runs"]:
        lines.append(f"| {r['repeat']} | {r['floor_s']:.2f} | {r['deployer_wall_s']:.2f} | "
                     f"{r['ratio']:.2f} | {r['deployer_after_import_s']:.2f} | "
                     f"{r['deployer_plan_s']:.2f} | {r['deployer_upload_s']:.2f} | "
                     f"{r['load']:.1f} |")
    return "\n".join(lines) + "\n"


def main(n: int, files: int, repeat: int, base_image: str, out: Path, down: bool) -> None:
    from deployer.sandbox import manager

    make_project(files)
    log(f"sandbox up: {n} hosts ({base_image})")
    info = manager.up(PROJECT, hosts=n, base_image=base_image, with_docker=False,
                      log=lambda m: log(f"  sandbox: {m}"))
    try:
        data = run(info, n, files, repeat, out)
    finally:
        if down:
            manager.down(PROJECT)
    s = data["summary"]
    log(f"floor {s['floor_s']:.2f}s, deployer {s['deployer_wall_s']:.2f}s "
        f"({s['ratio_wall']:.2f}x; after imports {s['ratio_after_import']:.2f}x); "
        f"wrote {out / 'copy-tree.md'}")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--deployer-once":
        deployer_once(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        raise SystemExit("run it through bench/run.py --copy-tree")
