"""Registry login for one run, leaving no credential on the host afterwards.

``docker login`` stores the password in ``$DOCKER_CONFIG/config.json``
(default ``~/.docker``). deployer points ``DOCKER_CONFIG`` at a directory of
its own for the run, ``<deploy_dir>/.docker-config-<release>`` (mode 0700),
gives ``compose pull``/``up`` the same variable, and removes the directory
when the host is done. The password only ever travels on stdin
(``--password-stdin``), never in argv, so it is not visible in ``ps`` or in
``plan``. A run killed before its clean-up leaves the directory behind; the
next run removes it with :func:`remove_stale_configs` once it holds the lock.

Compose v1 reads ``DOCKER_CONFIG`` too (docker-py honours it). A user whose
compose plugin lives in ``~/.docker/cli-plugins`` keeps it: the login script
links that directory into the temporary config.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

from deployer.commands.base import Command, Script
from deployer.commands.release import check_release_id
from deployer.secrets import Secret

CONFIG_PREFIX = ".docker-config-"

_LOGIN = """
set -e
d=$1
shift
umask 077
mkdir -p -- "$d"
chmod 0700 -- "$d"
if [ -d "$HOME/.docker/cli-plugins" ] && [ ! -e "$d/cli-plugins" ]; then
  ln -s -- "$HOME/.docker/cli-plugins" "$d/cli-plugins"
fi
DOCKER_CONFIG=$d exec docker login "$@"
""".strip()


def docker_config_dir(deploy_dir: str, release: str) -> str:
    return posixpath.join(deploy_dir, CONFIG_PREFIX + check_release_id(release))


@dataclass(frozen=True)
class RegistryLogin:
    """The commands of one run's login, and the env the docker commands need."""

    config_dir: str
    login: Command = field(repr=False)
    cleanup: Command

    @property
    def env(self) -> tuple[tuple[str, str], ...]:
        """Pass to :class:`deployer.commands.compose.Compose` (``env=``)."""
        return (("DOCKER_CONFIG", self.config_dir),)


def registry_login(
    deploy_dir: str,
    release: str,
    *,
    server: str | None,
    username: str,
    password: str,
    sudo: bool = False,
) -> RegistryLogin:
    """Create the run's config directory and log in, in one round trip.

    ``server`` None means Docker Hub. ``sudo``: docker needs sudo in this
    session (:attr:`HostFacts.docker_sudo`); the directory is then root's, and
    the clean-up runs with sudo as well.
    """
    if not username or not password:
        raise ValueError("registry login needs a username and a password")
    config_dir = docker_config_dir(deploy_dir, release)
    args = [config_dir]
    if server:
        args.append(server)
    args += ["--username", username, "--password-stdin"]
    login = Script(
        _LOGIN,
        args=tuple(args),
        sudo=sudo,
        stdin=Secret(password),
        description=f"docker login {server or 'docker.io'}",
    ).command()
    cleanup = Command(
        ("rm", "-rf", "--", config_dir),
        sudo=sudo,
        description="remove the run's registry credentials",
    )
    return RegistryLogin(config_dir, login, cleanup)


_REMOVE_STALE = """
for d in "$1"/.docker-config-*; do
  [ -d "$d" ] || continue
  rm -rf -- "$d"
  printf 'removed=%s\\n' "$d"
done
""".strip()


def remove_stale_configs(deploy_dir: str, *, sudo: bool = False) -> Command:
    """Remove credential directories that runs killed before their clean-up
    left behind. Only while holding the deploy lock."""
    return Script(
        _REMOVE_STALE,
        args=(deploy_dir,),
        sudo=sudo,
        description="remove stale registry credentials",
    ).command()
