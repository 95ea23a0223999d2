"""Scale mode (issue 19): deployer, Ansible, pyinfra 3 and a paramiko work
floor on the same 50 / 100 / 200 light hosts, in the same run.

    python bench/run.py --scale 50,100,200

Light hosts are containers running sshd and nothing else (no systemd, no
dockerd), built from the local ``debian:bookworm``. Each has the bench
fixture ``bench/fixtures/fake_docker`` on its PATH as ``docker`` and
``docker-compose``: it answers at once and records the calls, so what is
measured is the deploying machine and the SSH work. The deploy user's login
shell is a counting wrapper: every command any tool runs over SSH (sftp
included) is one line in the host's ``/tmp/commands.log``, the same yardstick
for every tool; connections are sshd's ``Accepted publickey`` lines.

Per N and tool: a **changed** ship (a new compose file, so upload, pull, up,
health) and then a **no-op** ship (the same again). Per run: wall time, the
CPU seconds (user + system, of the whole process tree) and peak RSS (the
sum over the tree, sampled every 20 ms) on the deploying machine, and
connections and commands per host. The **work floor** (``paramiko_floor.py
--work``) repeats, per host, what deployer's ``-o json`` report says it did:
one connection, the same number of commands, the same bytes uploaded.

The **1-host no-op**: deployer's no-op ship to one host against ``ssh host
true`` (the OpenSSH floor), the median of 5 alternating pairs.

The **bastion case**: 100 hosts (or the largest N below it) through one
``proxy_jump`` bastion whose sshd keeps the default ``MaxStartups``; its own
log says how many SSH connections deployer opened to it.

Results: bench/results/scale.json, scale.md and scale.png.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
WORK = RESULTS / "tmp" / "scale"
PROJECT = WORK / "project"
VENV = BENCH / ".venv"  # ansible-core, matplotlib
PYINFRA_VENV = BENCH / ".venv-pyinfra"  # pyinfra 3, apart from ansible's deps
IMAGE_REPO = "deployer-bench-light"
NETWORK = "deployer-bench-scale"
PREFIX = "deployer-bench-light-"
LABEL = "deployer-bench-scale"
USER = "deploy"
APP = "benchscale"
TOOLS = ("deployer", "work-floor", "pyinfra", "ansible")
SCENARIOS = ("changed", "noop")
COMPOSE = """\
services:
  web:
    image: "benchscale/web:{version}"
    restart: unless-stopped
    ports:
      - "8080:8080"
"""

DOCKERFILE = f"""\
# BENCH FIXTURE (bench/scale.py): a light scale-bench host. sshd only, no
# systemd, no dockerd; `docker` is the fake in bench/fixtures/fake_docker.
FROM debian:bookworm
RUN set -eux; export DEBIAN_FRONTEND=noninteractive; apt-get update; \\
    apt-get install -y --no-install-recommends openssh-server python3 sudo; \\
    apt-get clean; rm -rf /var/lib/apt/lists/*; \\
    groupadd docker; \\
    useradd --create-home --shell /usr/local/bin/countsh --groups docker {USER}; \\
    usermod --password '*' {USER}; \\
    printf '%s ALL=(ALL) NOPASSWD:ALL\\n' {USER} > /etc/sudoers.d/90-{USER}; \\
    install -d -m 0700 -o {USER} -g {USER} /home/{USER}/.ssh; \\
    mkdir -p /run/sshd; ssh-keygen -A; \\
    printf 'PasswordAuthentication no\\nKbdInteractiveAuthentication no\\nUseDNS no\\n' \\
      > /etc/ssh/sshd_config.d/bench.conf
COPY fake_docker /usr/local/bin/docker
COPY countsh /usr/local/bin/countsh
RUN ln -s docker /usr/local/bin/docker-compose; chmod 0755 /usr/local/bin/*; \\
    echo /usr/local/bin/countsh >> /etc/shells
COPY start /usr/local/sbin/start
CMD ["sh", "/usr/local/sbin/start"]
"""
# The container's start: the authorized key, a (dead) docker socket so the
# host looks like one with Docker installed, then sshd in the foreground.
START = f"""#!/bin/sh
set -e
printf '%s\\n' "$AUTH_KEY" > /home/{USER}/.ssh/authorized_keys
chown {USER}: /home/{USER}/.ssh/authorized_keys
rm -f /var/run/docker.sock
python3 -c "import socket; socket.socket(socket.AF_UNIX).bind('/var/run/docker.sock')"
chmod 0666 /var/run/docker.sock
exec /usr/sbin/sshd -D -E /var/log/sshd.log
"""
# The deploy user's login shell: one line per command sshd runs for it, then /bin/sh.
COUNTSH = """#!/bin/sh
printf '%s\\n' x >> /tmp/commands.log
exec /bin/sh "$@"
"""


def log(msg: str) -> None:
    sys.stderr.write(f"[{datetime.now().strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def pmap(fn: Any, items: Any, workers: int = 8) -> list[Any]:
    items = list(items)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items)))) as pool:
        return list(pool.map(fn, items))


def sh(*argv: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(list(argv), capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}...: exit {p.returncode}: {p.stderr[-800:]}")
    return p


# --------------------------------------------------------------------------
# Light hosts


@dataclass
class Fleet:
    hosts: list[tuple[str, str]]  # (name, address), in order
    bastion: tuple[str, str]  # (container, address)
    key: Path
    known_hosts: Path
    cpu_files: dict[str, Path] = field(default_factory=dict)  # container -> its CPU counter


def image() -> str:
    ctx = WORK / "image"
    ctx.mkdir(parents=True, exist_ok=True)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    shutil.copy(BENCH / "fixtures" / "fake_docker", ctx / "fake_docker")
    (ctx / "countsh").write_text(COUNTSH)
    (ctx / "start").write_text(START)
    digest = hashlib.sha256(
        b"".join((ctx / f).read_bytes() for f in ("Dockerfile", "fake_docker", "countsh", "start"))
    ).hexdigest()[:12]
    tag = f"{IMAGE_REPO}:{digest}"
    if sh("docker", "image", "inspect", tag, check=False).returncode != 0:
        log(f"building {tag}")
        sh("docker", "build", "-q", "-t", tag, str(ctx))
    return tag


def fleet_up(n: int) -> Fleet:
    """``n`` light hosts and one bastion on their own network; reuses the
    containers of an earlier run."""
    tag = image()
    key = WORK / "id_ed25519"
    if not key.exists():
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench-scale", "-f", str(key))
    pub = key.with_suffix(".pub").read_text().strip()
    if sh("docker", "network", "inspect", NETWORK, check=False).returncode != 0:
        sh("docker", "network", "create", "--label", LABEL, NETWORK)
    found = [line.split() for line in sh("docker", "ps", "-a", "--filter", f"label={LABEL}",
                                         "--format", "{{.Names}} {{.Image}}").stdout.splitlines()]
    stale = [name for name, img in found if img != tag]  # an older image: start afresh
    if stale:
        sh("docker", "rm", "-f", *stale)
    have = {name for name, img in found if img == tag}
    names = [f"{PREFIX}bastion"] + [f"{PREFIX}h{i:03d}" for i in range(1, n + 1)]

    def start(name: str) -> None:
        if name in have:
            sh("docker", "start", name)
            return
        sh("docker", "run", "-d", "--name", name, "--hostname", name.removeprefix(PREFIX),
           "--network", NETWORK, "--label", LABEL, "--memory", "96m", "--pids-limit", "256",
           "-e", f"AUTH_KEY={pub}", tag)

    pmap(start, names)
    fmt = "{{.Name}} {{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
    addr = dict(line.lstrip("/").split() for line in
                sh("docker", "inspect", "--format", fmt, *names).stdout.splitlines())
    hostkey = sh("docker", "exec", names[0], "cat",
                 "/etc/ssh/ssh_host_ed25519_key.pub").stdout.split()
    known = WORK / "known_hosts"
    known.write_text("".join(f"{addr[c]} {hostkey[0]} {hostkey[1]}\n" for c in names))
    hosts = [(c.removeprefix(PREFIX), addr[c]) for c in names[1:]]
    _wait_ssh([a for _, a in hosts] + [addr[names[0]]])
    ids = dict(line.lstrip("/").split() for line in
               sh("docker", "inspect", "--format", "{{.Name}} {{.Id}}", *names).stdout.splitlines())
    return Fleet(hosts, (names[0], addr[names[0]]), key, known, cpu_files(ids))


def cpu_files(ids: dict[str, str]) -> dict[str, Path]:
    """Each container's CPU-time counter (cgroup v1 ``cpuacct.usage`` in ns,
    or v2 ``cpu.stat``), where this machine has one: on the bench the hosts
    share the deploying machine's cores, so the work a tool makes them do
    is part of its wall time, and this says how much."""
    found = {}
    for name, cid in ids.items():
        for f in (Path("/sys/fs/cgroup/cpuacct/docker") / cid / "cpuacct.usage",
                  Path("/sys/fs/cgroup/docker") / cid / "cpu.stat",
                  Path("/sys/fs/cgroup/system.slice") / f"docker-{cid}.scope" / "cpu.stat"):
            if f.exists():
                found[name] = f
                break
    return found


def hosts_cpu(fleet: Fleet, containers: list[str]) -> float | None:
    """CPU seconds the ``containers`` have used so far (None: no counters)."""
    total = 0.0
    for c in containers:
        f = fleet.cpu_files.get(c)
        if f is None:
            return None
        text = f.read_text()
        if f.name == "cpuacct.usage":
            total += int(text) / 1e9
        else:
            total += int(text.split("usage_usec", 1)[1].split()[0]) / 1e6
    return total


def _wait_ssh(addresses: list[str], deadline: float = 120) -> None:
    import socket

    end = time.monotonic() + deadline
    for a in addresses:
        while True:
            try:
                with socket.create_connection((a, 22), timeout=2) as s:
                    if s.recv(4).startswith(b"SSH"):
                        break
            except OSError:
                pass
            if time.monotonic() > end:
                raise RuntimeError(f"{a}: sshd did not come up")
            time.sleep(0.2)


def fleet_down() -> None:
    """Remove the light hosts, ten at a time: ``docker rm -f`` of 50 running
    containers at once deadlocked Debian's dockerd 20.10 in libnetwork (the
    endpoint deletes and the containers' exit handling wait on one network
    lock; seen once, after a 200-host run). Stopped containers remove fast."""
    ids = sh("docker", "ps", "-aq", "--filter", f"label={LABEL}").stdout.split()
    for i in range(0, len(ids), 10):
        sh("docker", "stop", "-t", "1", *ids[i:i + 10], check=False)
    for i in range(0, len(ids), 10):
        sh("docker", "rm", "-f", *ids[i:i + 10], check=False)
    sh("docker", "network", "rm", NETWORK, check=False)


COUNT = ("printf '%s %s\\n' \"$(grep -c 'Accepted publickey' /var/log/sshd.log)\" "
         "\"$(cat /tmp/commands.log 2>/dev/null | wc -l)\"")


def counters(containers: list[str]) -> dict[str, tuple[int, int]]:
    """Per container: (connections accepted, commands run) so far."""
    def one(c: str) -> tuple[str, tuple[int, int]]:
        a, b = sh("docker", "exec", c, "sh", "-c", COUNT).stdout.split()
        return c, (int(a), int(b))

    return dict(pmap(one, containers, 16))


def reset(containers: list[str]) -> None:
    """No release of any tool, no fake container: the next changed ship
    starts from a host that has never seen the app."""
    pmap(lambda c: sh("docker", "exec", c, "sh", "-c",
                      f"rm -rf /home/{USER}/{APP}* /tmp/fake-docker /tmp/fake-docker.log; "
                      f"sudo rm -rf /opt/{APP}"), containers, 16)


# --------------------------------------------------------------------------
# The tools' inputs


def write_project(fleet: Fleet, n: int, version: str, bastion: bool = False) -> str:
    """deployer's project and an inventory for the first ``n`` hosts;
    returns the environment name."""
    (PROJECT / "templates").mkdir(parents=True, exist_ok=True)
    (PROJECT / "inventories").mkdir(exist_ok=True)
    (PROJECT / "deployer.yaml").write_text(
        f"app: {APP}\n"
        f"deploy_dir: /home/{USER}/{APP}-deployer\n"
        "files:\n  - template: templates/docker-compose.yaml.j2\n"
        "    dest: docker-compose.yaml\n"
        "compose_file: docker-compose.yaml\nhealth_timeout: 60\n")
    (PROJECT / "templates" / "docker-compose.yaml.j2").write_text(
        COMPOSE.format(version="{{ version }}"))
    env = f"b{n}" if bastion else f"n{n}"
    jump = f"  proxy_jump: {USER}@{fleet.bastion[1]}\n" if bastion else ""
    hosts = "".join(f"  {name}:\n    address: {a}\n" for name, a in fleet.hosts[:n])
    (PROJECT / "inventories" / f"{env}.yaml").write_text(
        f"ssh:\n  user: {USER}\n  identity_file: {fleet.key}\n"
        f"  known_hosts: {fleet.known_hosts}\n{jump}"
        f"rollout:\n  max_parallel: {n}\n"
        f"vars:\n  version: {version}\nhosts:\n{hosts}")
    return env


def write_others(fleet: Fleet, n: int, version: str) -> None:
    """Ansible's and pyinfra's inventories and the compose file they copy."""
    files = WORK / "files"
    files.mkdir(parents=True, exist_ok=True)
    (files / "docker-compose.yaml").write_text(COMPOSE.format(version=version))
    ssh_args = f"-o UserKnownHostsFile={fleet.known_hosts} -o StrictHostKeyChecking=yes"
    lines = ["[bench]"] + [f"{name} ansible_host={a}" for name, a in fleet.hosts[:n]]
    lines += ["[bench:vars]", f"ansible_user={USER}",
              f"ansible_ssh_private_key_file={fleet.key}",
              f"ansible_ssh_common_args='{ssh_args}'",
              "ansible_python_interpreter=/usr/bin/python3"]
    (WORK / f"ansible-{n}.ini").write_text("\n".join(lines) + "\n")
    hosts = ",\n".join(f"    ({name!r}, {{'ssh_hostname': {a!r}}})" for name, a in fleet.hosts[:n])
    (WORK / f"pyinfra-{n}.py").write_text(
        f"bench = ([\n{hosts},\n], {{\n"
        f"    'ssh_user': {USER!r}, 'ssh_key': {str(fleet.key)!r},\n"
        f"    'ssh_known_hosts_file': {str(fleet.known_hosts)!r},\n"
        "    'ssh_strict_host_key_checking': 'yes',\n"
        "})\n")


# --------------------------------------------------------------------------
# Measuring one process tree


@dataclass
class Usage:
    seconds: float
    cpu_s: float
    peak_rss_mb: float
    rc: int
    stdout: str
    stderr: str


def _tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and its descendants (from /proc)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            parents[int(d)] = int(fields[1])
            rss[int(d)] = int(fields[21]) * page
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [root]
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, ()))
    return total


def measured(argv: list[str], env: dict[str, str] | None = None,
             cwd: Path | None = None) -> Usage:
    """Run ``argv``: wall time, CPU of the whole tree (wait4 counts the
    descendants the tree waited for) and the peak of the tree's summed RSS."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=env, cwd=cwd)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(p.pid))
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out: list[str] = []
    err: list[str] = []
    readers = [threading.Thread(target=lambda: out.append(p.stdout.read())),  # type: ignore[union-attr]
               threading.Thread(target=lambda: err.append(p.stderr.read()))]  # type: ignore[union-attr]
    for r in readers:
        r.start()
    _, status, ru = os.wait4(p.pid, 0)
    seconds = time.monotonic() - t0
    done.set()
    sampler.join()
    for r in readers:
        r.join()
    p.returncode = os.waitstatus_to_exitcode(status)
    return Usage(round(seconds, 3), round(ru.ru_utime + ru.ru_stime, 3),
                 round(max(peak, ru.ru_maxrss * 1024) / 2**20, 1), p.returncode,
                 "".join(out), "".join(err))


# --------------------------------------------------------------------------
# One run of one tool


@dataclass
class Run:
    tool: str
    scenario: str
    hosts: int
    seconds: float
    cpu_s: float
    peak_rss_mb: float
    ok: bool
    load: float
    connections_per_host: float = 0.0
    commands_per_host: float = 0.0
    bastion_connections: int | None = None
    failed_hosts: int = 0
    hosts_cpu_s: float | None = None  # the hosts' (containers') CPU seconds during the run
    detail: str = ""


def run_tool(tool: str, fleet: Fleet, n: int, scenario: str, version: str,
             report: dict[str, Any], bastion: bool = False) -> Run:
    """One ``scenario`` of ``tool`` on the first ``n`` hosts. ``report``:
    deployer's JSON report per host for this scenario (deployer fills it,
    the work floor repeats what it says)."""
    containers = [PREFIX + name for name, _ in fleet.hosts[:n]]
    watch = containers + ([fleet.bastion[0]] if bastion else [])
    before = counters(watch)
    load = os.getloadavg()[0]
    cpu_before = hosts_cpu(fleet, watch)
    environ = dict(os.environ, PYTHONPATH=str(REPO))
    failed = 0
    if tool == "deployer":
        env = write_project(fleet, n, version, bastion)
        u = measured([sys.executable, "-m", "deployer", "-C", str(PROJECT), "-o", "json",
                      "ship", env, "--tag", f"bench-{version}"], env=environ)
        ok = u.rc == 0
        try:
            data = json.loads(u.stdout)
            report.clear()
            report.update({h["host"]: h for h in data["hosts"]})
            failed = sum(1 for h in data["hosts"] if h.get("result") == "failed")
        except (ValueError, KeyError, TypeError):
            ok = False
    elif tool == "work-floor":
        work = WORK / "work.json"
        addr = dict(fleet.hosts)
        work.write_text(json.dumps({addr[h]: [int(r.get("commands") or 0),
                                              int(r.get("bytes_uploaded") or 0)]
                                    for h, r in report.items() if h in addr}))
        u = measured([sys.executable, str(BENCH / "paramiko_floor.py"), "--work", str(work),
                      str(fleet.key), str(fleet.known_hosts), USER])
        ok = u.rc == 0
    elif tool == "pyinfra":
        write_others(fleet, n, version)
        u = measured([str(PYINFRA_VENV / "bin" / "pyinfra"), "-y", "--parallel", str(n),
                      "--data", f"files_dir={WORK / 'files'}",
                      f"pyinfra-{n}.py", str(BENCH / "pyinfra" / "deploy.py")], cwd=WORK)
        ok = u.rc == 0
    elif tool == "ansible":
        write_others(fleet, n, version)
        cp = WORK / "ansible-cp"
        shutil.rmtree(cp, ignore_errors=True)
        # As bench/run.py: Ansible's default ssh settings (ControlPersist
        # included), with a fresh control-path dir per run so no master
        # connection survives from the previous run.
        u = measured([str(VENV / "bin" / "ansible-playbook"), "-i", str(WORK / f"ansible-{n}.ini"),
                      "-f", str(n), "-e", f"files_dir={WORK / 'files'}",
                      str(BENCH / "ansible" / "scale.yml")],
                     env=dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="True",
                              ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="False",
                              ANSIBLE_SSH_CONTROL_PATH_DIR=str(cp)))
        for sock in cp.glob("*") if cp.exists() else []:
            sh("ssh", "-o", f"ControlPath={sock}", "-O", "exit", "x", check=False)
        ok = u.rc == 0
    else:
        raise ValueError(tool)
    cpu_after = hosts_cpu(fleet, watch)
    after = counters(watch)
    conns = [after[c][0] - before[c][0] for c in containers]
    cmds = [after[c][1] - before[c][1] for c in containers]
    run = Run(tool, scenario + (" (bastion)" if bastion else ""), n, u.seconds, u.cpu_s,
              u.peak_rss_mb, ok, round(load, 2), round(statistics.mean(conns), 2),
              round(statistics.mean(cmds), 2), failed_hosts=failed,
              hosts_cpu_s=None if cpu_before is None or cpu_after is None
              else round(cpu_after - cpu_before, 2),
              detail="" if ok else (u.stderr or u.stdout)[-600:])
    if bastion:
        b = fleet.bastion[0]
        run.bastion_connections = after[b][0] - before[b][0]
    log(f"  {tool:10} {run.scenario:18} N={n:<3} {u.seconds:7.2f}s cpu {u.cpu_s:6.2f}s "
        f"rss {u.peak_rss_mb:6.1f}MB conn/h {run.connections_per_host} cmd/h "
        f"{run.commands_per_host} hosts cpu {run.hosts_cpu_s}s"
        + (f" bastion conns {run.bastion_connections}" if bastion else "")
        + ("" if ok else f" FAILED {run.detail[-300:]}"))
    return run


ONE_HOST_REPEAT = 5


def one_host(fleet: Fleet, version: str) -> list[Run]:
    """The 1-host no-op against the OpenSSH floor (``ssh host true``), the
    median of :data:`ONE_HOST_REPEAT` alternating pairs."""
    name, address = fleet.hosts[0]
    reset([PREFIX + name])
    env = write_project(fleet, 1, version)
    argv = [sys.executable, "-m", "deployer", "-C", str(PROJECT), "-o", "json", "ship", env,
            "--tag", f"bench-{version}"]
    environ = dict(os.environ, PYTHONPATH=str(REPO))
    first = measured(argv, env=environ)  # the changed ship that makes the next ones no-ops
    ssh = ["ssh", "-i", str(fleet.key), "-o", f"UserKnownHostsFile={fleet.known_hosts}",
           "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", f"{USER}@{address}", "true"]
    pairs = [(measured(ssh), measured(argv, env=environ)) for _ in range(ONE_HOST_REPEAT)]
    runs = []
    for tool, us in (("openssh-floor", [p[0] for p in pairs]), ("deployer", [p[1] for p in pairs])):
        ok = first.rc == 0 and all(u.rc == 0 for u in us)
        mid = sorted(us, key=lambda u: u.seconds)[len(us) // 2]
        runs.append(Run(tool, "noop (1 host)", 1, mid.seconds, mid.cpu_s, mid.peak_rss_mb, ok,
                        round(os.getloadavg()[0], 2),
                        detail="" if ok else (first.stderr + mid.stderr)[-600:]))
        log(f"  {tool:14} noop (1 host) median of {len(us)}: {mid.seconds:.3f}s "
            f"(all: {', '.join(f'{u.seconds:.2f}' for u in us)})")
    return runs


# --------------------------------------------------------------------------
# Report


def targets(runs: list[Run], ns: list[int]) -> list[dict[str, Any]]:
    def t(tool: str, scen: str, n: int) -> float | None:
        for r in runs:
            if (r.tool, r.scenario, r.hosts) == (tool, scen, n) and r.ok:
                return r.seconds
        return None

    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, limit: float, better: str) -> None:
        met = None if value is None else (value <= limit if better == "<=" else value >= limit)
        out.append({"target": name, "value": None if value is None else round(value, 2),
                    "limit": f"{better} {limit}", "met": met})

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    n = 100 if 100 in ns else max(ns)
    add(f"no-op at {n}: deployer / work floor", ratio(t("deployer", "noop", n),
                                                       t("work-floor", "noop", n)), 1.5, "<=")
    add(f"no-op at {n}: pyinfra / deployer", ratio(t("pyinfra", "noop", n),
                                                    t("deployer", "noop", n)), 5, ">=")
    add(f"no-op at {n}: Ansible / deployer", ratio(t("ansible", "noop", n),
                                                    t("deployer", "noop", n)), 15, ">=")
    add(f"changed at {n}: deployer / work floor",
        ratio(t("deployer", "changed", n), t("work-floor", "changed", n)), 2, "<=")
    if 200 in ns and 100 in ns:
        for scen in SCENARIOS:
            add(f"{scen}: deployer at 200 / at 100",
                ratio(t("deployer", scen, 200), t("deployer", scen, 100)), 2.2, "<=")
    add("1-host no-op: deployer / ssh host true",
        ratio(t("deployer", "noop (1 host)", 1), t("openssh-floor", "noop (1 host)", 1)), 2, "<=")
    rss = [r.peak_rss_mb for r in runs if r.tool == "deployer" and r.hosts == max(ns)
           and "bastion" not in r.scenario]
    add(f"deployer peak RSS at {max(ns)} hosts (MB)", max(rss) if rss else None, 300, "<=")
    for r in runs:
        if "bastion" in r.scenario and r.tool == "deployer":
            add(f"bastion {r.scenario.split()[0]}: hosts ok of {r.hosts}",
                r.hosts - r.failed_hosts if r.ok or r.failed_hosts else 0, r.hosts, ">=")
            add(f"bastion {r.scenario.split()[0]}: SSH connections the bastion saw",
                r.bastion_connections, 1, "<=")
    return out


def fmt_cpu(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def markdown(data: dict[str, Any]) -> str:
    m = data["meta"]
    lines = [
        "# Scale benchmark (issue 19)", "",
        f"Machine: {m['machine']}; Python {m['python']}; started {m['started']}, "
        f"finished {m.get('finished', '?')}.",
        f"Light hosts (sshd + bench/fixtures/fake_docker), one run per cell. Tools: "
        f"{m.get('versions', {})}.", "",
        "CPU s: the deploying process tree's; hosts CPU s: what the hosts (containers on the",
        "same cores) spent meanwhile, sshd and the commands' own work included.", "",
        "| tool | scenario | hosts | wall s | CPU s | hosts CPU s | peak RSS MB | conn/host "
        "| cmd/host | ok |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in data["runs"]:
        extra = (f" (bastion saw {r['bastion_connections']} conn)"
                 if r.get("bastion_connections") is not None else "")
        lines.append(f"| {r['tool']} | {r['scenario']} | {r['hosts']} | {r['seconds']:.2f} | "
                     f"{r['cpu_s']:.2f} | {fmt_cpu(r.get('hosts_cpu_s'))} | "
                     f"{r['peak_rss_mb']:.0f} | {r['connections_per_host']} | "
                     f"{r['commands_per_host']} | {'yes' if r['ok'] else 'NO'}{extra} |")
    lines += ["", "## Targets", "", "| target | measured | limit | met |", "|---|---:|---|---|"]
    for t in data["targets"]:
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        lines.append(f"| {t['target']} | {t['value']} | {t['limit']} | {met} |")
    lines.append("")
    return "\n".join(lines)


def plot(data: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    runs = [r for r in data["runs"] if "bastion" not in r["scenario"]]
    for ax, (metric, label) in zip(axes, (("seconds", "wall time (s)"),
                                          ("cpu_s", "CPU seconds, deploying machine"),
                                          ("peak_rss_mb", "peak RSS (MB)")), strict=True):
        for tool in TOOLS:
            for scen, style in (("changed", "-"), ("noop", ":")):
                pts = sorted((r["hosts"], r[metric]) for r in runs
                             if (r["tool"], r["scenario"]) == (tool, scen) and r["ok"])
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                            linestyle=style, label=f"{tool} ({scen})")
        ax.set_xlabel("hosts")
        ax.set_ylabel(label)
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"scale bench, light hosts ({data['meta']['machine'].split(', ', 1)[-1]})")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def write(data: dict[str, Any], out: Path) -> None:
    runs = [Run(**r) for r in data["runs"]]
    data["targets"] = targets(runs, data["meta"]["hosts"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / "scale.md").write_text(markdown(data))


def make_plot(out: Path) -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        py = VENV / "bin" / "python"
        if not py.exists():
            log("no matplotlib (bench/.venv): plot skipped")
            return
        subprocess.run([str(py), __file__, "--plot", str(out)], check=True)
        return
    plot(json.loads((out / "scale.json").read_text()), out / "scale.png")


def versions() -> dict[str, str]:
    v: dict[str, str] = {}
    p = sh(str(VENV / "bin" / "ansible"), "--version", check=False)
    v["ansible"] = p.stdout.splitlines()[0] if p.stdout else "?"
    p = sh(str(PYINFRA_VENV / "bin" / "pyinfra"), "--version", check=False)
    v["pyinfra"] = p.stdout.strip() or "?"
    return v


def main(ns: list[int], tools: list[str], out: Path, bastion_n: int | None,
         down: bool, ansible_max: int = 100) -> None:
    for t in tools:
        if t not in TOOLS:
            raise SystemExit(f"unknown tool {t!r}: pick from {', '.join(TOOLS)}")
    if "pyinfra" in tools and not (PYINFRA_VENV / "bin" / "pyinfra").exists():
        raise SystemExit("no bench/.venv-pyinfra: python3 -m venv bench/.venv-pyinfra && "
                         "bench/.venv-pyinfra/bin/pip install 'pyinfra>=3,<4'")
    if "ansible" in tools and not (VENV / "bin" / "ansible-playbook").exists():
        raise SystemExit("no bench/.venv with ansible-core: see bench/README.md")
    WORK.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"meta": {
        "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()} {platform.platform()}, {os.cpu_count()} CPUs, "
                   f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') // 2**30} GB",
        "python": sys.version.split()[0], "hosts": ns, "tools": tools,
        "versions": versions(), "load": {}, "ansible_max": ansible_max,
    }, "runs": []}
    fleet = fleet_up(max(ns + ([bastion_n] if bastion_n else [])))
    step = 0
    try:
        for n in ns:
            data["meta"]["load"][f"N={n}"] = os.getloadavg()[0]
            log(f"N={n} (load {os.getloadavg()[0]:.2f})")
            reports: dict[str, dict[str, Any]] = {}  # deployer's, per scenario
            for tool in ("deployer", "work-floor", *[t for t in tools if t not in
                                                    ("deployer", "work-floor")]):
                if tool not in tools and tool != "work-floor":
                    continue
                if tool == "ansible" and n > ansible_max:
                    log(f"  ansible skipped at N={n} (--ansible-max {ansible_max})")
                    continue
                reset([PREFIX + h for h, _ in fleet.hosts[:n]])
                step += 1
                for scen in SCENARIOS:
                    report = reports.setdefault(scen, {})
                    data["runs"].append(asdict(run_tool(tool, fleet, n, scen, f"v{step}",
                                                        report)))
                write(data, out)
        data["runs"] += [asdict(r) for r in one_host(fleet, f"v{step + 1}")]
        step += 1
        write(data, out)
        if bastion_n:
            log(f"bastion, N={bastion_n}")
            reset([PREFIX + h for h, _ in fleet.hosts[:bastion_n]])
            step += 1
            for scen in SCENARIOS:
                data["runs"].append(asdict(run_tool("deployer", fleet, bastion_n, scen,
                                                    f"v{step}", {}, bastion=True)))
    finally:
        data["meta"]["finished"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        write(data, out)
        if down:
            fleet_down()
    make_plot(out)
    log(f"wrote {out / 'scale.md'}")


if __name__ == "__main__":  # matplotlib in bench/.venv: plot only
    if len(sys.argv) == 3 and sys.argv[1] == "--plot":
        d = Path(sys.argv[2])
        plot(json.loads((d / "scale.json").read_text()), d / "scale.png")
