"""What a host is, in one round trip: the probe script and its parser.

Bootstrap (and ``ship`` on hosts it has not seen) must decide what to install
and how to run docker before doing anything else. Asking one question per SSH
round trip would make an idempotent second run cost a dozen round trips, so
one POSIX sh script prints every fact as ``key=value`` lines and
:func:`parse_facts` turns them into a :class:`HostFacts`.

The script only reads: it never needs sudo and never changes the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from deployer.commands.base import Script
from deployer.errors import DeployError

# First line of the probe's output: proves the script (and not a login banner
# or a broken shell) produced what we parse.
MARKER = "deployer_facts=1"

ComposeVariant = Literal["v2", "v1"]

# `docker compose` (the v2 CLI plugin) is preferred over a `docker-compose`
# binary: when both exist, the plugin is the maintained one. A `docker-compose`
# binary is called "v1" here because of how it is invoked; a standalone v2
# binary under that name accepts every flag deployer uses as well.
FACTS_SCRIPT = r"""
printf '%s\n' 'deployer_facts=1'
if [ -r /etc/os-release ]; then
  (
    . /etc/os-release
    printf 'os_id=%s\n' "${ID:-}"
    printf 'os_version_id=%s\n' "${VERSION_ID:-}"
    printf 'os_codename=%s\n' "${VERSION_CODENAME:-${UBUNTU_CODENAME:-}}"
    printf 'os_name=%s\n' "${PRETTY_NAME:-}"
  )
fi
printf 'user=%s\n' "$(id -un 2>/dev/null)"
printf 'uid=%s\n' "$(id -u)"
printf 'gid=%s\n' "$(id -g)"
if [ "$(id -u)" = 0 ]; then
  printf 'sudo=1\n'
elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
  printf 'sudo=1\n'
else
  printf 'sudo=0\n'
fi
printf 'arch=%s\n' "$(dpkg --print-architecture 2>/dev/null)"
printf 'docker_group=%s\n' "$(getent group docker 2>/dev/null)"
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  printf 'systemd=1\n'
  printf 'docker_service=%s\n' "$(systemctl is-active docker 2>/dev/null)"
else
  printf 'systemd=0\n'
fi
if [ -S /var/run/docker.sock ]; then printf 'docker_socket=1\n'; else printf 'docker_socket=0\n'; fi
if command -v docker >/dev/null 2>&1; then
  printf 'docker=1\n'
  if v=$(timeout 20 docker version --format '{{.Server.Version}}' 2>/dev/null); then
    printf 'docker_reachable=1\n'
    printf 'docker_server_version=%s\n' "$v"
  else
    printf 'docker_reachable=0\n'
  fi
  if v=$(docker compose version --short 2>/dev/null) && [ -n "$v" ]; then
    printf 'compose=v2\n'
    printf 'compose_version=%s\n' "$v"
  fi
else
  printf 'docker=0\n'
fi
if command -v docker-compose >/dev/null 2>&1; then
  # The distribution package's version answers at once; starting
  # docker-compose (a Python program) only to ask cost most of this probe.
  v=$(dpkg-query -W -f='${Version}' docker-compose 2>/dev/null) && v=${v%%[-+]*} || v=
  [ -n "$v" ] || v=$(docker-compose version --short 2>/dev/null)
  printf 'compose_v1_version=%s\n' "$v"
fi
exit 0
""".strip()


def facts_script() -> Script:
    """The probe: one round trip, read-only, no sudo."""
    return Script(FACTS_SCRIPT, description="probe host facts")


@dataclass(frozen=True)
class HostFacts:
    """Everything bootstrap and the deploy steps need to know about a host."""

    os_id: str = ""
    os_version_id: str = ""
    os_codename: str = ""
    os_name: str = ""
    arch: str = ""
    user: str = ""
    uid: int = -1
    gid: int = -1
    sudo: bool = False  # root, or `sudo -n true` works
    systemd: bool = False
    docker_installed: bool = False
    docker_service: str = ""  # `systemctl is-active docker`: active, inactive, ...
    docker_socket: bool = False
    docker_reachable: bool = False  # this session talks to the daemon without sudo
    docker_server_version: str = ""
    docker_group_gid: int | None = None
    docker_group_members: tuple[str, ...] = ()
    compose: ComposeVariant | None = None
    compose_version: str = ""

    @property
    def is_root(self) -> bool:
        return self.uid == 0

    @property
    def os_label(self) -> str:
        """``ubuntu 24.04`` style, for messages."""
        return f"{self.os_id or 'unknown'} {self.os_version_id}".strip()

    @property
    def docker_active(self) -> bool:
        """The daemon runs: systemd says so, or (no systemd) its socket exists."""
        if self.docker_service:
            return self.docker_service == "active"
        return self.docker_socket

    @property
    def in_docker_group(self) -> bool:
        """Member of ``docker`` per /etc/group (or it is the primary group).

        This is what the *next* login gets; the already-open session keeps the
        groups it started with, see :attr:`docker_sudo`.
        """
        if self.docker_group_gid is None:
            return False
        return self.user in self.docker_group_members or self.gid == self.docker_group_gid

    @property
    def docker_sudo(self) -> bool:
        """Docker commands need ``sudo -n`` in this session.

        True for a non-root user whose session cannot reach the daemon, e.g.
        one just added to the docker group: group membership only applies to
        new logins, so on the run that added it deployer goes through sudo, and
        on the next run (new connection) it does not.
        """
        return not self.is_root and not self.docker_reachable

    @property
    def can_sudo(self) -> bool:
        return self.is_root or self.sudo

    @property
    def bootstrapped(self) -> bool:
        """Docker and a compose are installed, the daemon runs, and the user
        can use docker without sudo from its next login on."""
        return (
            self.docker_installed
            and self.compose is not None
            and self.docker_active
            and (self.is_root or self.in_docker_group)
        )


def _flag(value: str) -> bool:
    return value.strip() == "1"


def _int(value: str, default: int = -1) -> int:
    try:
        return int(value.strip())
    except ValueError:
        return default


def parse_facts(stdout: str) -> HostFacts:
    """Parse the probe's output. Raises :class:`DeployError` when the output
    is not the probe's (so a broken shell is reported, not misread as "no
    Docker")."""
    lines = stdout.splitlines()
    if MARKER not in (line.strip() for line in lines):
        head = stdout.strip().splitlines()[:3]
        raise DeployError(
            "host probe printed unexpected output"
            + (f": {' | '.join(head)}" if head else " (nothing)"),
            "check that the SSH user's shell is a POSIX shell and prints nothing on login",
        )
    kv: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if sep:
            kv.setdefault(key.strip(), value)

    group_gid: int | None = None
    members: tuple[str, ...] = ()
    group_line = kv.get("docker_group", "").strip()
    if group_line:
        # getent: name:password:gid:member,member
        parts = group_line.split(":")
        if len(parts) >= 4:
            gid = _int(parts[2], default=-1)
            group_gid = gid if gid >= 0 else None
            members = tuple(m for m in parts[3].split(",") if m)

    compose: ComposeVariant | None = None
    compose_version = ""
    if kv.get("compose") == "v2":
        compose, compose_version = "v2", kv.get("compose_version", "").strip()
    elif "compose_v1_version" in kv:
        compose, compose_version = "v1", kv["compose_v1_version"].strip()

    return HostFacts(
        os_id=kv.get("os_id", "").strip().lower(),
        os_version_id=kv.get("os_version_id", "").strip(),
        os_codename=kv.get("os_codename", "").strip(),
        os_name=kv.get("os_name", "").strip(),
        arch=kv.get("arch", "").strip(),
        user=kv.get("user", "").strip(),
        uid=_int(kv.get("uid", "")),
        gid=_int(kv.get("gid", "")),
        sudo=_flag(kv.get("sudo", "")),
        systemd=_flag(kv.get("systemd", "")),
        docker_installed=_flag(kv.get("docker", "")),
        docker_service=kv.get("docker_service", "").strip(),
        docker_socket=_flag(kv.get("docker_socket", "")),
        docker_reachable=_flag(kv.get("docker_reachable", "")),
        docker_server_version=kv.get("docker_server_version", "").strip(),
        docker_group_gid=group_gid,
        docker_group_members=members,
        compose=compose,
        compose_version=compose_version,
    )
