"""Compose command lines, identical in meaning for compose v2 and v1.

v2 is the ``docker compose`` CLI plugin, v1 the ``docker-compose`` binary
(see :mod:`deployer.commands.facts`). Every command names the project
(``-p <project>``: the inventory's ``project_name``, default the app) and the
file (``-f <file>``, relative to the release directory it runs in): the
project name is what keeps named volumes and networks the same across
releases and rollbacks, so it must never depend on the directory.
Only flags both variants accept are used.

Roles: the per-host compose file already holds only the host's services
(:mod:`deployer.project`), so ``up`` normally gets no service list and
``--remove-orphans`` clears services a host no longer runs. When a caller does
pass services, ``up`` adds ``--no-deps``: the caller asked for exactly those
services, and compose must not start their dependencies, which may live on
another host.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from deployer.commands.base import Command
from deployer.commands.facts import ComposeVariant


@dataclass(frozen=True)
class Compose:
    """Builds compose commands for one app on one host.

    ``sudo``: the session cannot reach the daemon directly
    (:attr:`HostFacts.docker_sudo`). ``cwd``: the release directory.
    ``env``: e.g. ``DOCKER_CONFIG`` of the run's registry login
    (:attr:`deployer.commands.registry.RegistryLogin.env`).
    ``profiles``: compose profiles to enable (``--profile``, v1 >= 1.28 and
    v2), so compose starts exactly the services deployer waits for
    (:attr:`deployer.project.ServerCompose.profiles`).
    """

    app: str
    file: str = "docker-compose.yaml"
    variant: ComposeVariant = "v2"
    sudo: bool = False
    cwd: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    profiles: tuple[str, ...] = ()

    @property
    def base(self) -> tuple[str, ...]:
        program: tuple[str, ...] = (
            ("docker", "compose") if self.variant == "v2" else ("docker-compose",)
        )
        flags = tuple(f for p in self.profiles for f in ("--profile", p))
        return (*program, "-p", self.app, "-f", self.file, *flags)

    def _cmd(self, *args: str, description: str, ok_codes: tuple[int, ...] = (0,)) -> Command:
        return Command(
            (*self.base, *args),
            sudo=self.sudo,
            cwd=self.cwd,
            env=self.env,
            ok_codes=ok_codes,
            description=description,
        )

    def pull(self, services: Sequence[str] = ()) -> Command:
        """Pull the release's images (needs the registry login's env)."""
        return self._cmd("pull", "--quiet", *services, description="compose pull")

    def up(self, services: Sequence[str] = ()) -> Command:
        """Start the release detached; remove containers of services that are
        no longer in the file. With ``services``: only those, ``--no-deps``."""
        args: tuple[str, ...] = ("up", "-d", "--remove-orphans")
        if services:
            args = (*args, "--no-deps", *services)
        return self._cmd(*args, description="compose up")

    def ps(self) -> Command:
        """Every container of the project, stopped ones included."""
        return self._cmd("ps", "-a", description="compose ps")

    def services(self) -> Command:
        """The services of the file, one per line (also validates the file)."""
        return self._cmd("config", "--services", description="compose config --services")

    def logs(
        self, service: str | None = None, *, tail: int | None = 100, follow: bool = False
    ) -> Command:
        """Logs without colours (they are prefixed by host and may be piped)."""
        args: list[str] = ["logs", "--no-color"]
        if tail is not None:
            args += ["--tail", str(tail)]
        if follow:
            args.append("--follow")
        if service:
            args.append(service)
        return self._cmd(*args, description=f"compose logs {service or ''}".rstrip())

    def stop(self, services: Sequence[str] = ()) -> Command:
        return self._cmd("stop", *services, description="compose stop")

    def down(self) -> Command:
        """Stop and remove the project's containers and networks. Never ``-v``:
        named volumes hold the app's data and must survive."""
        return self._cmd("down", "--remove-orphans", description="compose down")

    def exec(self, service: str, argv: Sequence[str], *, interactive: bool = False) -> Command:
        """Run ``argv`` in the running ``service`` container. Non-interactive
        runs get ``-T`` (no TTY), so output is plain and exit codes pass
        through; ``interactive`` needs a terminal, which ``deployer exec -i``
        gets by handing the line to OpenSSH. A non-zero exit is the command's
        own result, not a failed step."""
        if not argv:
            raise ValueError("exec needs a command to run")
        args: tuple[str, ...] = ("exec",) if interactive else ("exec", "-T")
        return self._cmd(*args, service, *argv, description=f"compose exec {service}")
