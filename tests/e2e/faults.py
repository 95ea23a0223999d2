"""Fault injectors for the sandbox, and a deployer run a test can watch.

Faults are injected on cue, never after a guessed sleep: :class:`WatchedRun`
reads the run's progress lines (stderr, one per step) as they come, and the
test acts when a host enters the step it wants to break. Every injector that
leaves something broken is a context manager that repairs it on the way out,
so one scenario's fault never leaks into the next.

Everything here acts on the sandbox's own containers through ``docker``
(``docker exec`` into a host, ``docker kill``/``start`` of the registry).
"""

from __future__ import annotations

import contextlib
import queue
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# A plain progress line: "[   1.2s] sandbox-1: upload release".
LINE = re.compile(r"^\[\s*[\d.]+s\] (.*)$")


def sh(container: str, script: str, check: bool = True) -> str:
    """``script`` run by ``sh -c`` as root inside a sandbox host; its stdout."""
    p = subprocess.run(["docker", "exec", container, "sh", "-c", script],
                       capture_output=True, text=True, check=False)
    if check and p.returncode != 0:
        raise AssertionError(f"{container}: `{script}` exit {p.returncode}: {p.stderr}")
    return p.stdout


class WatchedRun:
    """A deployer subprocess whose stderr lines are collected as they arrive."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._out: list[str] = []
        self._threads = [threading.Thread(target=self._pump_err, daemon=True),
                         threading.Thread(target=self._pump_out, daemon=True)]
        for t in self._threads:
            t.start()

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def _pump_out(self) -> None:
        assert self.proc.stdout is not None
        self._out.append(self.proc.stdout.read())

    def wait_step(self, step: str, hosts: tuple[str, ...] | None = None,
                  timeout: float = 600) -> str:
        """Block until one of ``hosts`` (any host: None) enters ``step``;
        return that host. Fails if the run ends or ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
            m = LINE.match(line)
            if not m:
                continue
            host, _, what = m.group(1).partition(": ")
            if what == step and (hosts is None or host in hosts):
                return host
        self.finish(timeout=60)
        raise AssertionError(f"no host reached {step!r}:\n" + "\n".join(self.lines))

    def finish(self, timeout: float = 600) -> tuple[int, str, str]:
        """Wait for the run to end: (exit code, stdout, all of stderr)."""
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        for t in self._threads:
            t.join(timeout=30)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return code, "".join(self._out), "\n".join(self.lines)


# -- faults on a host ----------------------------------------------------------


def cut_ssh(container: str, user: str) -> None:
    """Drop every SSH connection of ``user`` at once: SIGKILL to its sshd
    session processes (the TCP connection dies with them), as a network
    cut or a crashed sshd would. sshd itself keeps listening."""
    sh(container, f"pkill -KILL -f '^sshd: {user}'")


@contextlib.contextmanager
def sshd_stopped(container: str) -> Iterator[None]:
    """The host refuses SSH connections (sshd stopped) until the block ends."""
    sh(container, "systemctl stop ssh.service")
    try:
        yield
    finally:
        sh(container, "systemctl start ssh.service")


@contextlib.contextmanager
def new_host_key(container: str) -> Iterator[None]:
    """The host presents a host key the known_hosts file does not have (as
    after a reinstall, or a machine in the middle), until the block ends."""
    key = "/etc/ssh/ssh_host_ed25519_key"
    sh(container, f"mv {key} {key}.orig && mv {key}.pub {key}.pub.orig && "
                  f"ssh-keygen -q -t ed25519 -N '' -f {key} && systemctl restart ssh.service")
    try:
        yield
    finally:
        sh(container, f"mv -f {key}.orig {key} && mv -f {key}.pub.orig {key}.pub && "
                      "systemctl restart ssh.service")


@contextlib.contextmanager
def no_privileges(container: str, user: str) -> Iterator[None]:
    """``user`` has no passwordless sudo and is not in the docker group
    (logins from now on), until the block ends."""
    sudoers = f"/etc/sudoers.d/90-{user}"
    sh(container, f"mv {sudoers} /root/sudoers.orig && gpasswd -d {user} docker >/dev/null")
    try:
        yield
    finally:
        sh(container, f"mv /root/sudoers.orig {sudoers} && gpasswd -a {user} docker >/dev/null")


@contextlib.contextmanager
def small_disk(container: str, directory: str, room_kib: int) -> Iterator[None]:
    """``directory`` becomes a tmpfs holding a copy of what it held, with only
    ``room_kib`` KiB free, until the block ends. Then the tmpfs is unmounted
    and what the run wrote on it is gone: check the host inside the block."""
    staging = "/root/small-disk"
    used = int(sh(container, f"du -sk {directory} | cut -f1").strip())
    sh(container, f"mkdir -p {staging} && mount -t tmpfs -o size={used + room_kib}k tmpfs "
                  f"{staging} && cp -a {directory}/. {staging}/ && "
                  f"mount --bind {staging} {directory}")
    try:
        yield
    finally:
        sh(container, f"umount -l {directory} && umount -l {staging}")


def restart_dockerd(container: str) -> None:
    """``systemctl restart docker`` on the host: every container is stopped
    and the ones with a restart policy come back when dockerd is up again."""
    sh(container, "systemctl restart docker.service")


# -- faults of the registry ----------------------------------------------------


@contextlib.contextmanager
def registry_down(info: Any) -> Iterator[None]:
    """The sandbox registry killed (connections refused) until the block
    ends; then started again and waited for."""
    from deployer.sandbox.registry import wait_registry

    name = info.registry.container
    subprocess.run(["docker", "kill", name], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["docker", "start", name], check=True, capture_output=True)
        import docker

        wait_registry(info.registry.server, info.registry.ca_cert, info.registry.password,
                      docker.from_env().containers.get(name))


# -- what a host runs ----------------------------------------------------------


@dataclass
class HostState:
    current: str  # the release ``current`` points at ("" none)
    containers: dict[str, tuple[str, str]]  # service -> (release label, state)
    leftovers: list[str]  # .lock, .docker-config-* in the deploy dir
    incomplete: list[str]  # release directories without a manifest (not .partial)


def host_state(container: str, app: str, deploy_dir: str) -> HostState:
    """One look at a host: ``current``, every container of the compose
    project ``app`` with its ``<app>.release`` label, and what a run must
    never leave behind."""
    out = sh(container, f"""
cd {deploy_dir} || exit 1
t=$(readlink current 2>/dev/null) || t=
echo "current=${{t##*/}}"
for f in .lock .docker-config-*; do [ -e "$f" ] && echo "leftover=$f"; done
for d in releases/*; do
  case "$d" in *.partial) continue ;; esac
  [ -d "$d" ] && [ ! -f "$d/manifest.json" ] && echo "incomplete=$d"
done
docker ps -a --filter label=com.docker.compose.project={app} \
  --format 'container={{{{.Label "com.docker.compose.service"}}}} \
{{{{.Label "{app}.release"}}}} {{{{.State}}}} {{{{.Names}}}}'
true
""")
    current = ""
    containers: dict[str, tuple[str, str]] = {}
    leftovers: list[str] = []
    incomplete: list[str] = []
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key == "current":
            current = value
        elif key == "leftover":
            leftovers.append(value)
        elif key == "incomplete":
            incomplete.append(value)
        elif key == "container":
            service, release, state, name = value.split(" ")
            # Two containers of one service (compose v1 renames the old one
            # while recreating) are a mix as well: keep them apart.
            containers[service if service not in containers else f"{service}/{name}"] = (
                release, state)
    return HostState(current, containers, leftovers, incomplete)
