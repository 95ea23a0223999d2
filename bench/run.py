"""Benchmarks: deployer against an Ansible playbook and a plain ssh loop, on the
same sandbox hosts, in the same run (issue 9).

    python bench/run.py --hosts 1,4,8,16 --repeat 3

Brings up sandbox hosts with Docker preinstalled (``deployer.sandbox``), builds
and pushes the app's images once, then for every host count N and repeat, and
for every tool in turn (so machine-load drift hits all tools alike):

    reset the hosts (containers, images, deploy folders removed: untimed)
    cold ship (v1) -> changed ship (v2, a new image) -> no-op ship (v2 again)
    -> rollback (back to v1)

Tools: ``deployer`` (``ship --skip-build``: the images are in the registry, as
for the others; ``noop+build`` adds one no-op with the full image stage),
``ansible`` (bench/ansible/deploy.yml, forks = N), ``ssh-loop``
(bench/ssh_loop.sh, one host after the other) and ``ssh-parallel``
(ssh_loop.sh --parallel: the changed-ship floor). ``ssh-floor`` measures the
no-op floor: N parallel OpenSSH connections each running one command.
``paramiko-floor`` is the same done by one Python process with paramiko
(bench/paramiko_floor.py): the floor of any Python tool on paramiko.
``stack-floor`` first loads the rest of the chosen stack (typer with one
option parsed, jinja2, PyYAML, rich): the floor of any tool on that stack.
Together they split deployer's no-op time into what the stack costs and what
deployer adds.

Per run and host it records: wall time of the whole command, SSH connections
(sshd's "Accepted publickey" lines in each host's journal, for every tool;
deployer's own JSON report agrees), remote commands (deployer: its report;
OpenSSH tools: ssh invocations seen by a counting wrapper, sftp/scp transfers
apart), bytes uploaded (deployer: its report; the others: the files they copy)
and bytes received by each host's sshd (an iptables counter on port 22: the
same yardstick for all tools, protocol and Ansible's module payloads included).

Writes bench/results/results.json, results.md and plot.png (matplotlib runs in
bench/.venv, next to ansible-core, so neither is a dependency of deployer).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
WORK = RESULTS / "tmp"  # git-ignored scratch: project copy, sandbox keys, logs
PROJECT = WORK / "project"
VENV = BENCH / ".venv"
APP = "benchweb"
SCENARIOS = ("cold", "changed", "noop", "rollback")
TOOLS = ("deployer", "ansible", "ssh-loop", "ssh-parallel")
FLOORS = ("ssh-floor", "paramiko-floor", "stack-floor")
ROW_ORDER = TOOLS + FLOORS  # table rows: tools, then floors from the bare one up
SSH_USER = "deploy"

# --------------------------------------------------------------------------
# Records


@dataclass
class HostCounts:
    """What one run cost one host."""

    connections: int = 0  # sshd "Accepted publickey" lines during the run
    commands: int = 0  # remote commands (tool-reported or counted by the wrapper)
    transfers: int = 0  # sftp/scp sessions (OpenSSH tools; deployer: in commands)
    bytes_uploaded: int = 0  # payload files the tool copied
    ssh_bytes_in: int = 0  # bytes the host's sshd received (iptables counter)
    reported_connections: int | None = None  # deployer's own count, for cross-checking


@dataclass
class Run:
    tool: str
    scenario: str
    hosts: int
    repeat: int
    seconds: float
    ok: bool
    load: float  # 1-minute load average when the run started
    per_host: dict[str, HostCounts] = field(default_factory=dict)
    detail: str = ""


def log(msg: str) -> None:
    """Progress on stderr with a wall-clock stamp: a full run takes a while."""
    sys.stderr.write(f"[{datetime.now().strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def load1() -> float:
    return os.getloadavg()[0]


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def pmap(fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
    items = list(items)
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(items))) as pool:
        return list(pool.map(fn, items))


# --------------------------------------------------------------------------
# Hosts (through `docker exec`, so nothing here touches the SSH numbers)


def dexec(container: str, script: str, check: bool = True) -> str:
    p = subprocess.run(["docker", "exec", container, "sh", "-c", script],
                       capture_output=True, text=True)
    if check and p.returncode != 0:
        raise RuntimeError(f"{container}: exit {p.returncode}: {p.stderr.strip()[-500:]}")
    return p.stdout


COUNTERS = (
    "printf '%s ' $(journalctl -u ssh --no-pager -o cat | grep -c 'Accepted publickey');"
    " iptables -w -L INPUT -v -x -n | awk '/dpt:22/ {print $2; exit}'"
)
# Each tool keeps its own folder on the hosts (so one tool's reset leaves the
# others' releases alone); all share the compose project, port and image store.
TOOL_DIRS = {
    "deployer": f"/opt/{APP}",
    "ansible": f"/home/{SSH_USER}/{APP}-ansible",
    "ssh-loop": f"/home/{SSH_USER}/{APP}-loop",
    "ssh-parallel": f"/home/{SSH_USER}/{APP}-parallel",
}
# Before a cold ship: no container, no image (the base layers too), no folder
# of this tool: the first release pulls and starts everything.
RESET = f"""
set +e
ids=$(docker ps -aq --filter label=com.docker.compose.project={APP})
[ -n "$ids" ] && docker rm -f $ids >/dev/null
docker network rm {APP}_default >/dev/null 2>&1
docker image prune -af >/dev/null
rm -rf "$@" /home/{SSH_USER}/.docker /home/{SSH_USER}/.ansible
exit 0
"""


def host_counters(hosts: list[Any]) -> dict[str, tuple[int, int]]:
    def one(h: Any) -> tuple[str, tuple[int, int]]:
        parts = dexec(h.container, COUNTERS).split()
        return h.name, (int(parts[0]), int(parts[1]) if len(parts) > 1 else 0)

    return dict(pmap(one, hosts))


def prepare_hosts(hosts: list[Any]) -> None:
    """An iptables counter for port 22 (counts only, accepts everything)."""
    rule = "INPUT -p tcp --dport 22"
    pmap(lambda h: dexec(h.container, f"iptables -w -C {rule} 2>/dev/null || "
                         f"iptables -w -I {rule}"), hosts)


def dexec_args(container: str, script: str, *args: str) -> str:
    p = subprocess.run(["docker", "exec", container, "sh", "-c", script, "sh", *args],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{container}: exit {p.returncode}: {p.stderr.strip()[-500:]}")
    return p.stdout


def reset_hosts(hosts: list[Any], *tools: str) -> None:
    dirs = [TOOL_DIRS[t] for t in tools if t in TOOL_DIRS]
    pmap(lambda h: dexec_args(h.container, RESET, *dirs), hosts)


def forget_image(hosts: list[Any], image_id: str) -> None:
    """Remove one image (v2) from the hosts, so the next "changed" ship pulls
    it again; the base layers stay, as they would on a real server."""
    pmap(lambda h: dexec_args(h.container, 'docker rmi -f "$1" >/dev/null 2>&1; exit 0',
                              image_id), hosts)


def compose_cmd(host: Any) -> str:
    out = dexec(host.container, "docker compose version >/dev/null 2>&1 && echo v2 || echo v1")
    return "docker compose" if out.strip() == "v2" else "docker-compose"


# --------------------------------------------------------------------------
# The environment of one benchmark run


@dataclass
class Env:
    info: Any  # deployer.sandbox.manager.SandboxInfo
    refs: dict[str, str]  # version -> pinned image ref
    image_ids: dict[str, str]  # version -> image id (the same on the hosts)
    files: dict[str, Path]  # version -> folder with the rendered compose file
    compose: str
    password_file: Path
    bin: Path  # counting wrappers
    count_log: Path

    @property
    def hosts(self) -> list[Any]:
        return list(self.info.hosts)


WRAPPER = """#!/bin/sh
# Counts each {kind} invocation (one line each, written with one printf so
# parallel callers do not interleave), then runs the real one.
args=$(printf ' %s' "$@" | tr '\\n' ' ')
printf '@@ {kind}%s\\n' "$args" >> "{log}"
exec {real} "$@"
"""


def make_wrappers(work: Path, count_log: Path) -> Path:
    bindir = work / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for kind in ("ssh", "scp", "sftp"):
        real = shutil.which(kind)
        if real is None:
            raise SystemExit(f"{kind} not found: apt-get install openssh-client")
        p = bindir / f"count-{kind}"
        p.write_text(WRAPPER.format(kind=kind, log=count_log, real=real))
        p.chmod(0o755)
    return bindir


def wrapper_counts(count_log: Path, hosts: list[Any]) -> dict[str, tuple[int, int]]:
    """(remote commands, transfers) per host from the wrappers' log."""
    out = {h.name: [0, 0] for h in hosts}
    if not count_log.exists():
        return {k: (0, 0) for k in out}
    pats = {h.name: re.compile(r"(?<![\d.])" + re.escape(h.address) + r"(?![\d])") for h in hosts}
    for line in count_log.read_text().splitlines():
        if not line.startswith("@@ "):
            continue
        kind = line.split(" ", 2)[1]
        for name, pat in pats.items():
            if pat.search(line):
                out[name][0 if kind == "ssh" else 1] += 1
                break
    return {k: (v[0], v[1]) for k, v in out.items()}


RUN_TIMEOUT = 1800.0  # a hung tool fails its run instead of the whole benchmark


def run_tool(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(args, capture_output=True, text=True, env=env,
                              timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return subprocess.CompletedProcess(args, 124, out, f"timed out after {RUN_TIMEOUT:g}s")


def deployer_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "deployer", "-C", str(PROJECT), *args]


def deployer_env() -> dict[str, str]:
    """The environment deployer runs in: plain progress, no CI annotations."""
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("GITHUB_ACTIONS", None)
    return env


def app_sandbox(project: Path, max_hosts: int, base_image: str) -> Any:
    """bench/app copied into ``project`` (its ``.deployer/`` kept, so a sandbox
    left by the last run comes up in seconds) and a sandbox of ``max_hosts``
    hosts with Docker preinstalled; its ``SandboxInfo``. Shared with
    bench/no_registry.py."""
    from deployer.sandbox import manager

    project.mkdir(parents=True, exist_ok=True)
    for item in (BENCH / "app").iterdir():
        dest = project / item.name
        if item.is_dir():
            shutil.copytree(item, dest, dirs_exist_ok=True)
        else:
            shutil.copy2(item, dest)
    log(f"sandbox up: {max_hosts} hosts with Docker ({base_image})")
    return manager.up(project, hosts=max_hosts, base_image=base_image, with_docker=True,
                      log=lambda m: log(f"  sandbox: {m}"))


def setup(max_hosts: int, base_image: str) -> Env:
    """Sandbox up (kept between bench runs), images v1/v2 built and pushed once,
    compose files rendered for the OpenSSH tools."""
    import jinja2

    info = app_sandbox(PROJECT, max_hosts, base_image)
    prepare_hosts(list(info.hosts))
    env = deployer_env()
    refs: dict[str, str] = {}
    image_ids: dict[str, str] = {}
    for version in ("v1", "v2"):
        (PROJECT / "site" / "version.txt").write_text(version + "\n")
        for step in ("build", "push"):
            p = subprocess.run(deployer_cmd("-o", "json", step, "sandbox", "--tag", version),
                               capture_output=True, text=True, env=env)
            if p.returncode != 0:
                raise SystemExit(f"deployer {step} {version} failed:\n{p.stdout}\n{p.stderr}")
        refs[version] = json.loads(p.stdout)["images"]["web"]
        image_ids[version] = subprocess.run(
            ["docker", "image", "inspect", "-f", "{{.Id}}", refs[version].split("@")[0]],
            capture_output=True, text=True, check=True).stdout.strip()
        log(f"image {version}: {refs[version]}")
    # v2 stays in the build context: `noop+build` rebuilds it from cache.
    template = jinja2.Template((PROJECT / "templates" / "docker-compose.yaml.j2").read_text(),
                               undefined=jinja2.StrictUndefined)
    files: dict[str, Path] = {}
    for version, ref in refs.items():
        d = WORK / "render" / version
        d.mkdir(parents=True, exist_ok=True)
        (d / "docker-compose.yaml").write_text(template.render(images={"web": ref}) + "\n")
        files[version] = d
    pw = WORK / "registry-password"
    fd = os.open(pw, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, info.registry.password.encode())
    os.close(fd)
    count_log = WORK / "ssh-calls.log"
    return Env(info, refs, image_ids, files, compose_cmd(info.hosts[0]), pw,
               make_wrappers(WORK, count_log), count_log)


# --------------------------------------------------------------------------
# The tools

SCENARIO_VERSION = {"cold": "v1", "changed": "v2", "noop": "v2", "rollback": "v1"}


def run_deployer(env: Env, hosts: list[Any], scenario: str) -> tuple[bool, str, dict[str, dict]]:
    limit = ",".join(h.name for h in hosts)
    if scenario == "rollback":
        # No --to: the default target (the newest older release with other
        # content) is v1 on every repeat: v1, v2, rollback, v2 again, ...
        args = deployer_cmd("-o", "json", "rollback", "sandbox", "--limit", limit)
    else:
        extra = [] if scenario == "noop+build" else ["--skip-build"]
        version = SCENARIO_VERSION.get(scenario, "v2")
        args = deployer_cmd("-o", "json", "ship", "sandbox", "--tag", version, *extra,
                            "--limit", limit)
    e = {**os.environ, "NO_COLOR": "1"}
    e.pop("GITHUB_ACTIONS", None)
    p = run_tool(args, e)
    try:
        report = json.loads(p.stdout)
    except ValueError:
        return False, f"exit {p.returncode}: {p.stderr.strip()[-800:]}", {}
    want = ("unchanged" if scenario.startswith("noop")
            else "rolled back" if scenario == "rollback" else "deployed")
    per = {h["host"]: h for h in report.get("hosts", [])}
    bad = {n: h["result"] for n, h in per.items() if h["result"] != want}
    if scenario == "rollback":  # back to v1, not to an older copy of v2
        bad.update({n: f"rolled back to {h.get('release')}" for n, h in per.items()
                    if not str(h.get("release", "")).endswith("-v1")})
    ok = p.returncode == 0 and not bad
    return ok, "" if ok else f"exit {p.returncode}: {bad} {p.stderr.strip()[-800:]}", per


def ansible_inventory(env: Env, hosts: list[Any], path: Path) -> None:
    info = env.info
    common = f"-o UserKnownHostsFile={info.known_hosts} -o StrictHostKeyChecking=yes"
    lines = ["[bench]"]
    lines += [f"{h.name} ansible_host={h.address}" for h in hosts]
    lines += [
        "[bench:vars]",
        f"ansible_user={SSH_USER}",
        f"ansible_ssh_private_key_file={info.ssh_key}",
        f"ansible_ssh_common_args='{common}'",
        "ansible_python_interpreter=/usr/bin/python3",
    ]
    path.write_text("\n".join(lines) + "\n")


def run_ansible(env: Env, hosts: list[Any], scenario: str) -> tuple[bool, str]:
    version = SCENARIO_VERSION[scenario]
    tmp = Path(tempfile.mkdtemp(prefix="ansible-", dir=WORK))
    inv = tmp / "inventory.ini"
    ansible_inventory(env, hosts, inv)
    extra = tmp / "vars.json"
    fd = os.open(extra, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, json.dumps({
        "files_dir": str(env.files[version]),
        "registry_server": env.info.registry.server,
        "registry_user": env.info.registry.username,
        "registry_password": env.info.registry.password,
        "compose_cmd": env.compose,
        "app_dir": TOOL_DIRS["ansible"],
    }).encode())
    os.close(fd)
    e = {
        **os.environ,
        "ANSIBLE_FORKS": str(len(hosts)),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_LOCAL_TEMP": str(tmp / "local"),
        # A fresh control-path dir per run: no master connection survives
        # from the previous run (ControlPersist would otherwise flatter Ansible).
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp / "cp"),
        "ANSIBLE_SSH_EXECUTABLE": str(env.bin / "count-ssh"),
        "ANSIBLE_SFTP_EXECUTABLE": str(env.bin / "count-sftp"),
        "ANSIBLE_SCP_EXECUTABLE": str(env.bin / "count-scp"),
    }
    p = run_tool([str(VENV / "bin" / "ansible-playbook"), "-i", str(inv),
                  str(BENCH / "ansible" / "deploy.yml"), "-e", f"@{extra}",
                  "-f", str(len(hosts))], e)
    # close the persisted master connections so they do not linger
    for sock in (tmp / "cp").glob("*") if (tmp / "cp").exists() else []:
        subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "x"],
                       capture_output=True)
    shutil.rmtree(tmp, ignore_errors=True)
    ok = p.returncode == 0
    return ok, "" if ok else f"exit {p.returncode}: {p.stdout[-1500:]} {p.stderr[-500:]}"


def run_ssh_loop(env: Env, hosts: list[Any], scenario: str, parallel: bool) -> tuple[bool, str]:
    version = SCENARIO_VERSION[scenario]
    e = {
        **os.environ,
        "HOSTS": " ".join(h.address for h in hosts),
        "SSH_USER": SSH_USER,
        "SSH_KEY": str(env.info.ssh_key),
        "KNOWN_HOSTS": str(env.info.known_hosts),
        "FILES_DIR": str(env.files[version]),
        "REGISTRY": env.info.registry.server,
        "REGISTRY_USER": env.info.registry.username,
        "REGISTRY_PASSWORD_FILE": str(env.password_file),
        "COMPOSE": env.compose,
        "APP": APP,
        "APP_DIR": TOOL_DIRS["ssh-parallel" if parallel else "ssh-loop"].rsplit("/", 1)[1],
        "SSH": str(env.bin / "count-ssh"),
        "SCP": str(env.bin / "count-scp"),
    }
    args = ["bash", str(BENCH / "ssh_loop.sh")] + (["--parallel"] if parallel else [])
    p = run_tool(args, e)
    ok = p.returncode == 0
    return ok, "" if ok else f"exit {p.returncode}: {p.stderr[-800:]}"


def run_noop_floor(env: Env, hosts: list[Any]) -> tuple[bool, str]:
    """N parallel OpenSSH connections, each running one command."""
    opts = ["-i", str(env.info.ssh_key), "-o", f"UserKnownHostsFile={env.info.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ControlMaster=no",
            "-o", "ControlPath=none", "-o", "LogLevel=ERROR"]
    procs = [subprocess.Popen([str(env.bin / "count-ssh"), *opts, f"{SSH_USER}@{h.address}",
                               "true"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for h in hosts]
    rcs = [p.wait() for p in procs]
    ok = all(rc == 0 for rc in rcs)
    return ok, "" if ok else f"exit codes {rcs}"


def run_paramiko_floor(env: Env, hosts: list[Any], stack: bool = False) -> tuple[bool, str]:
    """One Python process, paramiko, N parallel connections each running one
    command: the floor of any Python tool on paramiko; with ``stack``, after
    loading typer, jinja2, PyYAML and rich (bench/paramiko_floor.py)."""
    p = run_tool([sys.executable, str(BENCH / "paramiko_floor.py"),
                  *(["--stack"] if stack else []), str(env.info.ssh_key),
                  str(env.info.known_hosts), SSH_USER, *(h.address for h in hosts)],
                 dict(os.environ))
    ok = p.returncode == 0
    return ok, "" if ok else f"exit {p.returncode}: {p.stderr[-800:]}"


def measure(env: Env, tool: str, scenario: str, hosts: list[Any], repeat: int) -> Run:
    before = host_counters(hosts)
    env.count_log.write_text("")
    load = load1()
    t0 = time.monotonic()
    per_report: dict[str, dict] = {}
    if tool == "deployer":
        ok, detail, per_report = run_deployer(env, hosts, scenario)
    elif tool == "ansible":
        ok, detail = run_ansible(env, hosts, scenario)
    elif tool == "ssh-floor":
        ok, detail = run_noop_floor(env, hosts)
    elif tool in ("paramiko-floor", "stack-floor"):
        ok, detail = run_paramiko_floor(env, hosts, stack=tool == "stack-floor")
    else:
        ok, detail = run_ssh_loop(env, hosts, scenario, parallel=tool == "ssh-parallel")
    seconds = time.monotonic() - t0
    after = host_counters(hosts)
    calls = wrapper_counts(env.count_log, hosts)
    payload = 0
    if tool in ("ansible", "ssh-loop", "ssh-parallel"):
        payload = (env.files[SCENARIO_VERSION[scenario]] / "docker-compose.yaml").stat().st_size
    per: dict[str, HostCounts] = {}
    for h in hosts:
        c = HostCounts(
            connections=after[h.name][0] - before[h.name][0],
            ssh_bytes_in=after[h.name][1] - before[h.name][1],
        )
        if tool == "deployer":
            r = per_report.get(h.name, {})
            c.commands = int(r.get("commands") or 0)
            c.bytes_uploaded = int(r.get("bytes_uploaded") or 0)
            c.reported_connections = r.get("connections")
        else:
            c.commands, c.transfers = calls[h.name]
            c.bytes_uploaded = payload if c.transfers else 0
        per[h.name] = c
    run = Run(tool, scenario, len(hosts), repeat, round(seconds, 3), ok, round(load, 2), per,
              detail)
    log(f"  {tool:12} {scenario:10} N={len(hosts):<2} #{repeat} {seconds:7.2f}s "
        f"{'ok' if ok else 'FAILED ' + detail[:300]}")
    return run


def sequence(tool: str, cold: bool) -> list[str]:
    """The scenarios of one tool in one repeat. Without ``cold`` the tool's
    folder keeps the v1 release its previous repeat rolled back to, and only
    the v2 image is removed from the hosts, so "changed" still pulls a new
    image (v2's top layer) and replaces the running containers."""
    out = ["cold"] if cold else []
    out += ["changed", "noop"]
    if tool == "deployer":
        out.append("noop+build")
    return [*out, "rollback"]


# --------------------------------------------------------------------------
# deployer --help start-up


def help_startup(runs: int = 9) -> dict[str, Any]:
    """Median wall time of ``deployer --help`` (the console script itself, not
    a pyenv shim) and the heaviest imports from ``-X importtime``."""
    script = Path(sys.executable).parent / "deployer"
    cmds = {"python -m deployer --help": [sys.executable, "-m", "deployer", "--help"]}
    if script.exists():
        cmds["deployer --help"] = [str(script), "--help"]
    cmds["python -c pass (interpreter floor)"] = [sys.executable, "-c", "pass"]
    out: dict[str, Any] = {"runs": runs, "load": load1(), "median_s": {}}
    for name, cmd in cmds.items():
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True)
            times.append(time.perf_counter() - t0)
        out["median_s"][name] = round(statistics.median(times), 3)
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "deployer", "--help"],
                       capture_output=True, text=True)
    rows = []
    for line in p.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m:
            rows.append((int(m.group(2)), len(m.group(3)) // 2, m.group(4)))
    top = sorted((r for r in rows if r[1] <= 1), reverse=True)[:12]
    out["top_imports_cumulative_ms"] = {name: round(us / 1000, 1) for us, _, name in top}
    return out


# --------------------------------------------------------------------------
# Summaries, Markdown, plot


def summarize(runs: list[Run]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, int], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.tool, r.scenario, r.hosts), []).append(r)
    out = []
    for (tool, scenario, n), rs in sorted(groups.items(), key=lambda kv: (kv[0][2], kv[0][0],
                                                                           kv[0][1])):
        good = [r for r in rs if r.ok]

        def med(attr: str, rs: list[Run] = good) -> float | None:
            vals = [getattr(c, attr) for r in rs for c in r.per_host.values()]
            return statistics.median(vals) if vals else None

        out.append({
            "tool": tool, "scenario": scenario, "hosts": n,
            "median_s": round(statistics.median(r.seconds for r in good), 2) if good else None,
            "runs_s": [r.seconds for r in rs], "n": len(good), "failed": len(rs) - len(good),
            "connections_per_host": med("connections"),
            "commands_per_host": med("commands"),
            "transfers_per_host": med("transfers"),
            "bytes_uploaded_per_host": med("bytes_uploaded"),
            "ssh_bytes_in_per_host": med("ssh_bytes_in"),
            "load_median": round(statistics.median(r.load for r in rs), 2),
        })
    return out


def lookup(summary: list[dict[str, Any]], tool: str, scenario: str, n: int) -> float | None:
    for s in summary:
        if (s["tool"], s["scenario"], s["hosts"]) == (tool, scenario, n):
            return s["median_s"]
    return None


def targets(summary: list[dict[str, Any]], ns: list[int]) -> list[dict[str, Any]]:
    """The issue's targets, as ratios of medians measured in the same run."""
    rows = []
    for n in ns:
        def ratio(a: float | None, b: float | None) -> float | None:
            return round(a / b, 2) if a and b else None

        d_noop = lookup(summary, "deployer", "noop", n)
        d_chg = lookup(summary, "deployer", "changed", n)
        rows.append({
            "hosts": n,
            "noop_vs_floor": ratio(d_noop, lookup(summary, "ssh-floor", "noop", n)),
            "noop_vs_paramiko_floor": ratio(d_noop, lookup(summary, "paramiko-floor", "noop", n)),
            "paramiko_floor_vs_floor": ratio(lookup(summary, "paramiko-floor", "noop", n),
                                             lookup(summary, "ssh-floor", "noop", n)),
            "stack_floor_vs_floor": ratio(lookup(summary, "stack-floor", "noop", n),
                                          lookup(summary, "ssh-floor", "noop", n)),
            "noop_vs_stack_floor": ratio(d_noop, lookup(summary, "stack-floor", "noop", n)),
            "noop_ansible_speedup": ratio(lookup(summary, "ansible", "noop", n), d_noop),
            "changed_vs_floor": ratio(d_chg, lookup(summary, "ssh-parallel", "changed", n)),
            "changed_ansible_speedup": ratio(lookup(summary, "ansible", "changed", n), d_chg),
        })
    return rows


def fmt_bytes(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v / 1024:.1f} KiB" if v >= 1024 else f"{v:.0f} B"


def fmt(v: float | None, spec: str = "g") -> str:
    return "-" if v is None else format(v, spec)


def markdown(data: dict[str, Any]) -> str:
    summary = data["summary"]
    ns = sorted({s["hosts"] for s in summary})
    lines = [
        "# deployer benchmark results",
        "",
        f"Measured {data['meta']['started']} to {data['meta'].get('finished', '(running)')} on "
        f"{data['meta']['machine']}; repeats: {data['meta']['repeat']}. "
        "Made by `python bench/run.py` (see bench/README.md).",
        "",
        "Load (`uptime` load averages at each stage): " + "; ".join(
            f"{k}: {v.split('load average:')[-1].strip()}"
            for k, v in data["meta"]["uptime"].items()),
        "",
        "## Wall time (median seconds)",
        "",
        f"Median of {data['meta']['repeat']} runs unless marked (n=...): cold ships and the "
        "sequential ssh loop run fewer times (`--cold-repeat`, `--loop-repeat`) to keep the "
        "run near an hour.",
        "",
        "| tool | scenario | " + " | ".join(f"N={n}" for n in ns) + " |",
        "|---|---|" + "---:|" * len(ns),
    ]
    keys = sorted({(s["tool"], s["scenario"]) for s in summary},
                  key=lambda k: (ROW_ORDER.index(k[0]) if k[0] in ROW_ORDER else 99, k))
    for tool, scen in keys:
        cells = []
        for n in ns:
            s = next((x for x in summary if (x["tool"], x["scenario"], x["hosts"]) ==
                      (tool, scen, n)), None)
            if s is None:
                cells.append("-")
            else:
                cells.append(fmt(s["median_s"], ".2f")
                             + (f" (n={s['n']})" if s["n"] != data["meta"]["repeat"] else "")
                             + (f" ({s['failed']} failed)" if s["failed"] else ""))
        lines.append(f"| {tool} | {scen} | " + " | ".join(cells) + " |")
    nmax = max(ns)
    lines += [
        "",
        f"## Per host at N={nmax} (medians)",
        "",
        "SSH connections: sshd `Accepted publickey` lines in each host's journal. "
        "Commands: deployer's report; for OpenSSH tools, ssh invocations (each runs one "
        "remote command) and sftp/scp transfers apart. Bytes uploaded: payload files. "
        "SSH bytes in: what the host's sshd received (iptables counter on port 22), "
        "protocol and Ansible's module payloads included.",
        "",
        "| tool | scenario | connections | commands | transfers | bytes uploaded | "
        "SSH bytes in |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for tool, scen in keys:
        s = next((x for x in summary if (x["tool"], x["scenario"], x["hosts"]) ==
                  (tool, scen, nmax)), None)
        if s:
            lines.append(
                f"| {tool} | {scen} | {fmt(s['connections_per_host'])} | "
                f"{fmt(s['commands_per_host'])} | {fmt(s['transfers_per_host'])} | "
                f"{fmt_bytes(s['bytes_uploaded_per_host'])} | "
                f"{fmt_bytes(s['ssh_bytes_in_per_host'])} |")
    lines += [
        "",
        "## Targets (ratios of medians from this run)",
        "",
        "| N | no-op / no-op floor (<= 1.5) | Ansible no-op / deployer no-op (>= 10 at 8) | "
        "changed / changed floor (<= 1.2) | Ansible changed / deployer changed (>= 1.5) | "
        "paramiko floor / no-op floor | stack floor / no-op floor | no-op / stack floor |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    def mark(v: float | None, ok: bool | None) -> str:
        return fmt(v) + ("" if v is None or ok is None else (" ✓" if ok else " ✗"))

    for t in data["targets"]:
        n, a, b, c, d = (t["hosts"], t["noop_vs_floor"], t["noop_ansible_speedup"],
                         t["changed_vs_floor"], t["changed_ansible_speedup"])
        lines.append(
            f"| {n} | {mark(a, a is not None and a <= 1.5)} | "
            f"{mark(b, (b >= 10) if (b is not None and n == 8) else None)} | "
            f"{mark(c, c is not None and c <= 1.2)} | {mark(d, d is not None and d >= 1.5)} | "
            f"{fmt(t.get('paramiko_floor_vs_floor'))} | {fmt(t.get('stack_floor_vs_floor'))} | "
            f"{fmt(t.get('noop_vs_stack_floor'))} |")
    h = data.get("help_startup") or {}
    if h:
        lines += ["", "## `deployer --help` start-up", "",
                  f"Median of {h['runs']} runs (load {h['load']:.2f}):", ""]
        lines += [f"- `{k}`: {v:.3f} s" for k, v in h["median_s"].items()]
        main_s = h["median_s"].get("deployer --help", h["median_s"].get(
            "python -m deployer --help"))
        if main_s is not None:
            lines += ["", f"Target under 0.3 s: {'met ✓' if main_s < 0.3 else 'missed ✗'}."]
        lines += ["", "Heaviest top-level imports (`-X importtime`, cumulative ms): " +
                  ", ".join(f"{k} {v}" for k, v in h["top_imports_cumulative_ms"].items())]
    if data.get("findings"):
        lines += ["", "## Findings", ""] + [f"- {f}" for f in data["findings"]]
    return "\n".join(lines) + "\n"


def plot(results: Path, png: Path) -> None:
    """Median time against hosts, one line per tool and scenario: one panel
    per scenario, so each panel compares the tools (and its floor) directly.
    Runs in bench/.venv, where matplotlib is."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(results.read_text())
    summary = data["summary"]
    colors = {"deployer": "tab:blue", "ansible": "tab:red", "ssh-loop": "tab:gray",
              "ssh-parallel": "tab:green", "ssh-floor": "black", "paramiko-floor": "tab:purple",
              "stack-floor": "tab:orange"}
    labels = {"ssh-parallel": "ssh-parallel (changed-ship floor)",
              "ssh-floor": "ssh-floor (no-op floor)",
              "paramiko-floor": "paramiko-floor (Python + paramiko, no-op)",
              "stack-floor": "stack-floor (+ typer, jinja2, yaml, rich, no-op)"}
    panels = {"cold": ["cold"], "changed": ["changed"], "noop": ["noop", "noop+build"],
              "rollback": ["rollback"]}
    ns = sorted({s["hosts"] for s in summary})
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    for ax, (title, scens) in zip(axes.flat, panels.items(), strict=True):
        for tool in (*TOOLS, "ssh-floor", "paramiko-floor", "stack-floor"):
            for scen in scens:
                pts = sorted((s["hosts"], s["median_s"]) for s in summary
                             if (s["tool"], s["scenario"]) == (tool, scen) and s["median_s"])
                if not pts:
                    continue
                name = labels.get(tool, tool) + ("" if scen == title else f" ({scen})")
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                        linestyle=":" if scen != title else "-",
                        color=colors.get(tool, "tab:purple"), label=name)
        ax.set_title(f"{title} ship" if title != "rollback" else "rollback")
        ax.set_xlabel("hosts")
        ax.set_ylabel("wall time, median (s)")
        ax.set_yscale("log")
        ax.set_xticks(ns)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("deployer vs Ansible vs ssh loop, same sandbox hosts, same run "
                 f"({data['meta'].get('machine', '').split(',')[-1].strip()})")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def make_plot(results: Path) -> None:
    py = VENV / "bin" / "python"
    png = results.with_name("plot.png")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if not py.exists():
            log("no matplotlib (create bench/.venv, see bench/README.md): plot skipped")
            return
        subprocess.run([str(py), __file__, "--plot", str(results)], check=True)
        return
    plot(results, png)


# --------------------------------------------------------------------------
# Main


def write_results(data: dict[str, Any], out: Path) -> None:
    data["summary"] = summarize([Run(**{**r, "per_host": {k: HostCounts(**v) for k, v in
                                                          r["per_host"].items()}})
                                 for r in data["runs"]])
    data["targets"] = targets(data["summary"], sorted({r["hosts"] for r in data["runs"]}))
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / "results.md").write_text(markdown(data))


def read_findings(path: Path | None) -> list[str]:
    """The ``- `` items of a Markdown list (continuation lines joined)."""
    if path is None or not path.exists():
        return []
    items: list[str] = []
    for line in path.read_text().splitlines():
        if line.startswith("- "):
            items.append(line[2:].strip())
        elif line.strip() and items and line.startswith(" "):
            items[-1] += " " + line.strip()
    return items


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", default="1,4,8,16", help="host counts, e.g. 1,4,8,16")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    ap.add_argument("--tools", default=",".join(TOOLS),
                    help=f"subset of {','.join(TOOLS)} (the no-op floor always runs)")
    ap.add_argument("--cold-repeat", type=int, default=1,
                    help="repeats that start from clean hosts with a cold ship (the "
                    "slowest scenario); later repeats start from the v1 left running")
    ap.add_argument("--loop-repeat", type=int, default=1,
                    help="repeats of the sequential ssh loop (its time is N times one "
                    "host's, and at 16 hosts it dominates the run)")
    ap.add_argument("--base-image", default="debian:bookworm", help="sandbox host image")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where results go")
    ap.add_argument("--down", action="store_true", help="remove the sandbox at the end")
    ap.add_argument("--findings", type=Path, default=RESULTS / "findings.md",
                    help="profiling findings to record in the results (Markdown, one "
                    "'- ' item per finding; default: bench/results/findings.md)")
    ap.add_argument("--plot", type=Path, help=argparse.SUPPRESS)  # internal: plot only
    ap.add_argument("--copy-tree", action="store_true",
                    help="instead: copy a tree of --files small files to --hosts hosts, "
                    "deployer against a tar | ssh floor (bench/copy_tree.py; default 8 "
                    "hosts, results in copy-tree.md)")
    ap.add_argument("--files", type=int, default=1000, help="files in the --copy-tree tree")
    ap.add_argument("--scale", metavar="N,N,...",
                    help="instead: the scale mode (issue 19, bench/scale.py): deployer, "
                    "pyinfra, Ansible and the work floor on light hosts (sshd + fake "
                    "docker), e.g. --scale 50,100,200; results in scale.md")
    ap.add_argument("--scale-tools", default="deployer,work-floor,pyinfra,ansible",
                    help="with --scale: the tools to run")
    ap.add_argument("--ansible-max", type=int, default=100,
                    help="with --scale: run Ansible only up to this many hosts (on 2 "
                    "cores it needs more than the rest of the run at 200)")
    ap.add_argument("--bastion", type=int, default=None,
                    help="with --scale: hosts in the bastion case (default 100, or the "
                    "largest N below it; 0: skip)")
    ap.add_argument("--proxy", action="store_true",
                    help="instead: a changed deploy behind the edge proxy against plain "
                    "compose up under load, and the proxy's latency overhead with hey "
                    "(bench/proxy.py, issue 16; --repeat deploys per mode, default 2; its "
                    "sandbox is removed at the end; results in proxy.md)")
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite results.md and plot.png from results.json")
    a = ap.parse_args()
    if a.plot:
        plot(a.plot, a.plot.with_name("plot.png"))
        return
    if a.report_only:
        saved: dict[str, Any] = json.loads((a.out / "results.json").read_text())
        saved["findings"] = read_findings(a.findings)
        write_results(saved, a.out)
        make_plot(a.out / "results.json")
        return
    if a.scale:
        sys.path.insert(0, str(BENCH))
        import scale

        scale_ns = sorted({int(x) for x in a.scale.split(",") if x.strip()})
        bastion = a.bastion if a.bastion is not None else min(100, max(scale_ns))
        scale.main(scale_ns, [t for t in a.scale_tools.split(",") if t], a.out,
                   bastion or None, a.down, a.ansible_max)
        return
    if a.proxy:
        sys.path.insert(0, str(BENCH))
        import proxy

        repeat = 2 if a.repeat == ap.get_default("repeat") else a.repeat
        proxy.main(repeat=repeat, base_image=a.base_image, out=a.out,
                   command="python3 " + " ".join(["bench/run.py", *sys.argv[1:]]))
        return
    if a.copy_tree:
        sys.path.insert(0, str(BENCH))
        import copy_tree

        hosts = 8 if a.hosts == ap.get_default("hosts") else int(a.hosts)
        copy_tree.main(hosts, a.files, a.repeat, a.base_image, a.out, a.down)
        return
    ns = sorted({int(x) for x in a.hosts.split(",") if x.strip()})
    tools = [t for t in a.tools.split(",") if t]
    unknown = set(tools) - set(TOOLS)
    if unknown:
        raise SystemExit(f"unknown tools: {unknown}")
    if "ansible" in tools and not (VENV / "bin" / "ansible-playbook").exists():
        raise SystemExit("bench/.venv has no ansible-playbook: see bench/README.md")
    WORK.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    data: dict[str, Any] = {
        "meta": {
            "started": started, "repeat": a.repeat, "cold_repeat": a.cold_repeat,
            "loop_repeat": a.loop_repeat, "hosts": ns, "tools": tools,
            "machine": f"{platform.node()} {platform.platform()}, {os.cpu_count()} CPUs",
            "python": sys.version.split()[0], "uptime": {"start": uptime()},
        },
        "runs": [],
    }
    log(f"--help start-up ({uptime()})")
    data["help_startup"] = help_startup()
    log(f"  {data['help_startup']['median_s']}")
    env = setup(max(ns), a.base_image)
    data["meta"]["images"] = env.refs
    data["meta"]["compose_on_hosts"] = env.compose
    ansible = VENV / "bin" / "ansible"
    if ansible.exists():
        v = subprocess.run([str(ansible), "--version"], capture_output=True, text=True).stdout
        data["meta"]["ansible"] = v.splitlines()[0] if v else "?"
    data["findings"] = read_findings(a.findings)
    # No container left running anywhere (a healthcheck a second per host is
    # CPU the measured hosts would not get), no release of an earlier run.
    reset_hosts(env.hosts, *TOOL_DIRS)
    try:
        for n in ns:
            hosts = env.hosts[:n]
            data["meta"]["uptime"][f"N={n}"] = uptime()
            log(f"N={n}: {uptime()}")
            for rep in range(1, a.repeat + 1):
                data["runs"].append(asdict(measure(env, "ssh-floor", "noop", hosts, rep)))
                data["runs"].append(asdict(measure(env, "paramiko-floor", "noop", hosts, rep)))
                data["runs"].append(asdict(measure(env, "stack-floor", "noop", hosts, rep)))
                cold = rep <= a.cold_repeat
                for tool in tools:
                    if tool == "ssh-loop" and rep > a.loop_repeat:
                        continue
                    if cold:
                        reset_hosts(hosts, tool)
                        scenarios = sequence(tool, cold=True)
                    else:
                        forget_image(hosts, env.image_ids["v2"])
                        scenarios = sequence(tool, cold=False)
                    for scen in scenarios:
                        data["runs"].append(asdict(measure(env, tool, scen, hosts, rep)))
                write_results(data, a.out)  # partial results survive an interruption
            reset_hosts(hosts, *TOOL_DIRS)
    finally:
        data["meta"]["finished"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        data["meta"]["uptime"]["end"] = uptime()
        write_results(data, a.out)
        if a.down:
            from deployer.sandbox import manager

            manager.down(PROJECT)
    make_plot(a.out / "results.json")
    log(f"wrote {a.out / 'results.md'}")


if __name__ == "__main__":
    main()
