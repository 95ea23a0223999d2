"""Installing Docker and a compose on Ubuntu 22.04/24.04 and Debian 12.

Three modes (``docker.install`` in the inventory):

- ``docker-ce``: Docker's own apt repository, step for step as in Docker's
  "Install Docker Engine on Ubuntu/Debian" guide, then docker-ce, docker-ce-cli,
  containerd.io, docker-buildx-plugin and docker-compose-plugin.
- ``distro``: the distribution's ``docker.io`` and its compose package
  (Debian 12: ``docker-compose``, v1; Ubuntu 24.04: ``docker-compose-v2``;
  Ubuntu 22.04: ``docker-compose-v2`` from jammy-updates where apt has it,
  else ``docker-compose`` v1).
- ``none``: deployer installs nothing; bootstrap only checks that Docker and a
  compose are there (see :func:`check_present`).

The builders take the probed :class:`HostFacts` (OS, codename, architecture),
so the commands are fully determined before anything runs and ``plan`` can
print them. Every step runs through ``sudo -n`` (nothing when the user is root)
with ``DEBIAN_FRONTEND=noninteractive`` for apt.
"""

from __future__ import annotations

from dataclasses import replace

from deployer.commands.base import Command, Script
from deployer.commands.facts import HostFacts
from deployer.errors import DeployError

INSTALL_MODES = ("docker-ce", "distro", "none")

# (os id, version id) -> codename used when os-release has none.
SUPPORTED: dict[tuple[str, str], str] = {
    ("ubuntu", "22.04"): "jammy",
    ("ubuntu", "24.04"): "noble",
    ("debian", "12"): "bookworm",
}

KEYRING_DIR = "/etc/apt/keyrings"
KEYRING = "/etc/apt/keyrings/docker.asc"
SOURCES_LIST = "/etc/apt/sources.list.d/docker.list"

DOCKER_CE_PACKAGES = (
    "docker-ce",
    "docker-ce-cli",
    "containerd.io",
    "docker-buildx-plugin",
    "docker-compose-plugin",
)

APT_ENV = (("DEBIAN_FRONTEND", "noninteractive"),)
# Fresh cloud VMs often run unattended-upgrades right after boot; waiting for
# the dpkg lock (apt >= 1.9.11: jammy, noble and bookworm all have it) beats
# failing with "Could not get lock".
APT = ("apt-get", "-o", "DPkg::Lock::Timeout=300")


class UnsupportedOSError(DeployError):
    """The host runs an OS deployer cannot install Docker on."""


def supported_label() -> str:
    return ", ".join(f"{os_id.capitalize()} {ver}" for os_id, ver in SUPPORTED)


def check_supported(facts: HostFacts) -> str:
    """The apt codename for the host's OS, or a refusal that names the OS."""
    key = (facts.os_id, facts.os_version_id)
    if key not in SUPPORTED:
        name = facts.os_name or facts.os_label
        raise UnsupportedOSError(
            f"unsupported OS {name!r} (deployer installs Docker on {supported_label()})",
            "install Docker and a compose yourself and set `docker: {install: none}`",
        )
    return facts.os_codename or SUPPORTED[key]


def _apt(*args: str, description: str) -> Command:
    return Command((*APT, *args), sudo=True, env=APT_ENV, description=description)


def docker_ce_repo(facts: HostFacts) -> list[Command]:
    """Docker's apt key and repository, as in Docker's install guide."""
    codename = check_supported(facts)
    if not facts.arch:
        raise DeployError(
            "could not tell the host's architecture (dpkg --print-architecture printed nothing)"
        )
    distro = facts.os_id  # "ubuntu" or "debian": the repository path
    base = f"https://download.docker.com/linux/{distro}"
    line = f"deb [arch={facts.arch} signed-by={KEYRING}] {base} {codename} stable"
    return [
        _apt("update", description="apt-get update"),
        _apt(
            "install", "-y", "ca-certificates", "curl", description="install ca-certificates, curl"
        ),
        Command(
            ("install", "-m", "0755", "-d", KEYRING_DIR),
            sudo=True,
            description=f"create {KEYRING_DIR}",
        ),
        Command(
            ("curl", "-fsSL", f"{base}/gpg", "-o", KEYRING),
            sudo=True,
            description="download Docker's apt key",
        ),
        Command(("chmod", "a+r", KEYRING), sudo=True, description="make Docker's apt key readable"),
        Script(
            'printf "%s\\n" "$1" > "$2"',
            args=(line, SOURCES_LIST),
            sudo=True,
            description=f"add Docker's apt repository ({distro} {codename})",
        ).command(),
        _apt("update", description="apt-get update (Docker's repository)"),
    ]


def docker_ce_install(facts: HostFacts) -> list[Command]:
    """``docker-ce`` mode: repository, then the engine, CLI, buildx, compose plugin."""
    return [
        *docker_ce_repo(facts),
        _apt("install", "-y", *DOCKER_CE_PACKAGES, description="install docker-ce"),
    ]


# Ubuntu 22.04 got docker-compose-v2 through jammy-updates; a host without the
# -updates pocket only has the v1 package. One script picks what apt offers,
# so the choice is made on the host in the same round trip as the install.
# The packages to install travel as "$@", the compose package is appended.
JAMMY_COMPOSE_SCRIPT = (
    "if apt-cache show docker-compose-v2 >/dev/null 2>&1; then c=docker-compose-v2; "
    'else c=docker-compose; fi; exec "$@" "$c"'
)


def _compose_package(facts: HostFacts) -> str | None:
    """The release's compose package, or None when the host must choose (jammy)."""
    key = (facts.os_id, facts.os_version_id)
    if key == ("ubuntu", "22.04"):
        return None
    return "docker-compose-v2" if key == ("ubuntu", "24.04") else "docker-compose"


def _distro_packages(facts: HostFacts, packages: tuple[str, ...], what: str) -> list[Command]:
    check_supported(facts)
    update = _apt("update", description="apt-get update")
    compose = _compose_package(facts)
    if compose is not None:
        names = ", ".join((*packages, compose))
        return [update, _apt("install", "-y", *packages, compose, description=f"install {names}")]
    script = Script(JAMMY_COMPOSE_SCRIPT, args=(*APT, "install", "-y", *packages)).command()
    return [
        update,
        replace(
            script,
            sudo=True,
            env=APT_ENV,
            description=f"install {what}docker-compose-v2 (or docker-compose)",
        ),
    ]


def distro_install(facts: HostFacts) -> list[Command]:
    """``distro`` mode: docker.io and the release's compose package."""
    return _distro_packages(facts, ("docker.io",), "docker.io, ")


def docker_install(facts: HostFacts, mode: str) -> list[Command]:
    """Install Docker and a compose per ``mode`` (``none``: nothing)."""
    if mode == "docker-ce":
        return docker_ce_install(facts)
    if mode == "distro":
        return distro_install(facts)
    if mode == "none":
        return []
    raise DeployError(f"unknown docker install mode {mode!r} (one of {', '.join(INSTALL_MODES)})")


def compose_install(facts: HostFacts, mode: str) -> list[Command]:
    """Docker is there but no compose: add only the compose package.

    ``docker-ce``: the compose plugin from Docker's repository (it works with a
    distro docker.io CLI as well). ``distro``: the release's compose package.
    """
    if mode == "docker-ce":
        return [
            *docker_ce_repo(facts),
            _apt(
                "install",
                "-y",
                "docker-compose-plugin",
                description="install docker-compose-plugin",
            ),
        ]
    if mode == "distro":
        return _distro_packages(facts, (), "")
    return docker_install(facts, mode)


def enable_service(facts: HostFacts) -> Command:
    """Start the daemon now and at boot."""
    if facts.systemd:
        return Command(
            ("systemctl", "enable", "--now", "docker"),
            sudo=True,
            description="enable and start docker",
        )
    # No systemd as PID 1 (a plain container): the package's init script.
    return Command(("service", "docker", "start"), sudo=True, description="start docker")


def add_to_docker_group(user: str) -> Command:
    """Let ``user`` use docker without sudo from its next login on."""
    return Command(
        ("usermod", "-aG", "docker", user),
        sudo=True,
        description=f"add {user} to the docker group",
    )


def check_present(facts: HostFacts) -> None:
    """``none`` mode (and the end of every bootstrap): Docker and a compose
    must be installed and the daemon running, else a message saying what is
    missing and what to do."""
    missing: list[str] = []
    if not facts.docker_installed:
        missing.append("docker is not installed")
    elif not facts.docker_active:
        missing.append("the docker service is not running")
    if facts.compose is None:
        missing.append("neither `docker compose` nor `docker-compose` is installed")
    if missing:
        raise DeployError(
            "; ".join(missing),
            "install Docker and compose on the host, or set `docker: {install: distro}` "
            "(or docker-ce) so that deployer installs them",
        )
