"""``deployer bootstrap``: turn a fresh Ubuntu/Debian host into a Docker host.

Idempotent and cheap when there is nothing to do: one probe (a single round
trip) and, when Docker, a compose, the running service and the user's docker
group membership are all there, the outcome is ``already bootstrapped`` with no
other command. Otherwise it installs what is missing per ``docker.install``,
enables the service, adds the SSH user to the ``docker`` group and probes
again, so the caller gets the facts as they are now: which compose to call,
and whether docker needs sudo in this session (it does right after the group
change, which only applies to new logins).

Only the :class:`~deployer.remote.base.Executor` protocol is used: the same
code runs over SSH and against a recording executor in unit tests.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from deployer.commands.base import Command
from deployer.commands.docker_install import (
    add_to_docker_group,
    check_present,
    compose_install,
    docker_install,
    enable_service,
)
from deployer.commands.facts import HostFacts, facts_script, parse_facts
from deployer.config.inventory import Host
from deployer.errors import DeployError, HostError
from deployer.remote.base import Executor

STEP = "bootstrap"
PROBE_TIMEOUT = 60.0
# apt-get update/install on a slow mirror; the executor's own default would
# cut a docker-ce install short.
INSTALL_TIMEOUT = 900.0


@dataclass(frozen=True)
class BootstrapOutcome:
    """What bootstrap found and did on one host."""

    host: str
    facts: HostFacts  # as probed at the end: compose variant, docker_sudo, ...
    changed: bool
    steps: tuple[str, ...] = ()  # descriptions of the commands that ran
    detail: str = ""  # one line for the report

    @property
    def message(self) -> str:
        return f"{self.host}: {self.detail}"


def probe(executor: Executor) -> HostFacts:
    """Probe the host in one round trip."""
    result = executor.run(facts_script().command(), timeout=PROBE_TIMEOUT)
    try:
        return parse_facts(result.stdout)
    except DeployError as e:
        raise HostError(executor.host, "probe host facts", e.message, e.hint) from None


def bootstrap_commands(facts: HostFacts, mode: str) -> list[Command]:
    """The commands that bring a host with ``facts`` to a bootstrapped state
    (pure: ``plan`` can print them). Raises :class:`DeployError` for an
    unsupported OS when something must be installed."""
    if mode == "none":
        return []
    commands: list[Command] = []
    if not facts.docker_installed:
        commands += docker_install(facts, mode)
    elif facts.compose is None:
        commands += compose_install(facts, mode)
    if not facts.docker_installed or not facts.docker_active:
        commands.append(enable_service(facts))
    if not facts.is_root and not facts.in_docker_group:
        commands.append(add_to_docker_group(facts.user))
    return commands


def _compose_label(facts: HostFacts) -> str:
    if facts.compose == "v2":
        return f"docker compose {facts.compose_version}".rstrip()
    if facts.compose == "v1":
        return f"docker-compose {facts.compose_version}".rstrip()
    return "no compose"


def _usable(host: Host, facts: HostFacts) -> None:
    """Docker must be usable in this session: directly, or through sudo."""
    try:
        check_present(facts)
    except DeployError as e:
        raise HostError(host.name, STEP, e.message, e.hint) from None
    if facts.docker_sudo and not facts.can_sudo:
        raise HostError(
            host.name,
            STEP,
            f"user {facts.user or '?'} can reach docker neither directly nor with sudo -n",
            f"add {facts.user or 'the user'} to the docker group, or give it passwordless sudo",
        )


def _privileged_need(facts: HostFacts) -> str:
    """What bootstrap wanted sudo for, so a user without it is told the real
    reason (on a host with Docker it is only the docker group, not an install)."""
    if not facts.docker_installed:
        return "install Docker"
    if facts.compose is None:
        return "install compose"
    if not facts.docker_active:
        return "start the docker service"
    return f"add {facts.user or 'the user'} to the docker group"


def install_step(facts: HostFacts, mode: str) -> str:
    """What the install does, for the live view: ``installing Docker (apt)``."""
    how = "apt, Docker's repository" if mode == "docker-ce" else "apt"
    if not facts.docker_installed:
        return f"installing Docker ({how})"
    if facts.compose is None:
        return f"installing compose ({how})"
    if not facts.docker_active:
        return "starting the docker service"
    return "adding the user to the docker group"


def bootstrap_host(
    executor: Executor,
    host: Host,
    step: Callable[[str], AbstractContextManager[None]] | None = None,
) -> BootstrapOutcome:
    """Make ``host`` a Docker host (see the module doc). Raises
    :class:`HostError` naming the host and the step on any failure.
    ``step(name)`` (e.g. ``HostRun.step``) wraps the install, so the live view
    shows it as it runs (a minute or more on a fresh host)."""
    facts = probe(executor)
    if facts.bootstrapped:
        _usable(host, facts)
        return BootstrapOutcome(
            host.name,
            facts,
            changed=False,
            detail=f"already bootstrapped ({_compose_label(facts)})",
        )

    mode = host.docker_install
    try:
        commands = bootstrap_commands(facts, mode)
    except DeployError as e:
        raise HostError(host.name, STEP, e.message, e.hint) from None

    if not commands:  # install: none, and Docker is (or is not) there
        _usable(host, facts)
        return BootstrapOutcome(
            host.name,
            facts,
            changed=False,
            detail=f"docker present, not managed by deployer ({_compose_label(facts)})",
        )

    if not facts.can_sudo:
        raise HostError(
            host.name,
            STEP,
            f"user {facts.user or '?'} has no passwordless sudo, which bootstrap needs to "
            f"{_privileged_need(facts)}",
            "give the user passwordless sudo (or connect as root), or install Docker yourself "
            "and set `docker: {install: none}`",
        )

    with (step or (lambda _name: nullcontext()))(install_step(facts, mode)):
        for command in commands:
            executor.run(command, timeout=INSTALL_TIMEOUT)

    after = probe(executor)
    _usable(host, after)
    notes = [f"installed per docker.install={mode}" if not facts.docker_installed else ""]
    if facts.docker_installed and facts.compose is None:
        notes.append("installed compose")
    notes.append(_compose_label(after))
    if not facts.is_root and not facts.in_docker_group:
        notes.append(
            f"added {after.user} to the docker group"
            + (" (docker via sudo until the next login)" if after.docker_sudo else "")
        )
    return BootstrapOutcome(
        host.name,
        after,
        changed=True,
        steps=tuple(c.description for c in commands),
        detail="; ".join(n for n in notes if n),
    )
