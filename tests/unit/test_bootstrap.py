"""Bootstrap orchestration against a recording executor with scripted results.

The commands themselves are covered by test_commands_docker_install; here:
which commands run, in which order, and how failures are reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from deployer.commands.base import Command
from deployer.commands.facts import MARKER
from deployer.config.inventory import Host, SSHSettings
from deployer.deploy.bootstrap import bootstrap_commands, bootstrap_host
from deployer.errors import HostError
from deployer.remote.base import Result


def facts_text(**kv: str) -> str:
    base = {
        "os_id": "debian",
        "os_version_id": "12",
        "os_codename": "bookworm",
        "os_name": "Debian GNU/Linux 12 (bookworm)",
        "user": "deploy",
        "uid": "1000",
        "gid": "1000",
        "sudo": "1",
        "arch": "amd64",
        "docker_group": "",
        "systemd": "1",
        "docker_service": "inactive",
        "docker_socket": "0",
        "docker": "0",
    }
    base.update(kv)
    return MARKER + "\n" + "".join(f"{k}={v}\n" for k, v in base.items() if v is not None)


FRESH = facts_text()
INSTALLED_V1_JUST_ADDED = facts_text(
    docker="1",
    docker_service="active",
    docker_socket="1",
    docker_reachable="0",
    docker_group="docker:x:998:deploy",
    compose_v1_version="1.29.2",
)
READY_V2 = facts_text(
    docker="1",
    docker_service="active",
    docker_socket="1",
    docker_reachable="1",
    docker_group="docker:x:998:deploy",
    compose="v2",
    compose_version="2.24.0",
)


@dataclass
class RecordingExecutor:
    """Returns scripted stdout for probes (in order) and exit 0 for the rest."""

    probes: list[str]
    host: str = "web-1"
    ran: list[Command] = field(default_factory=list)
    timeouts: list[float | None] = field(default_factory=list)
    fail_on: str | None = None  # description of a command that fails

    def run(self, command: Command, *, check: bool = True, timeout: float | None = None) -> Result:
        self.ran.append(command)
        self.timeouts.append(timeout)
        if command.description == "probe host facts":
            return Result(command, 0, stdout=self.probes.pop(0))
        if command.description == self.fail_on:
            raise HostError(self.host, command.description, "exit 100: E: Unable to locate package")
        return Result(command, 0)

    def upload(self, data: bytes, path: str, *, mode: int = 0o644) -> None:
        raise AssertionError("bootstrap uploads nothing")

    def close(self) -> None:
        pass


def host(mode: str = "distro") -> Host:
    return Host(name="web-1", address="10.0.0.1", groups=(), ssh=SSHSettings(), docker_install=mode)


def descriptions(ex: RecordingExecutor) -> list[str]:
    return [c.description for c in ex.ran]


def test_already_bootstrapped_is_one_round_trip() -> None:
    ex = RecordingExecutor([READY_V2])
    out = bootstrap_host(ex, host("docker-ce"))
    assert len(ex.ran) == 1
    assert not out.changed
    assert out.detail == "already bootstrapped (docker compose 2.24.0)"
    assert out.facts.compose == "v2" and not out.facts.docker_sudo
    assert out.steps == ()


def test_fresh_debian_distro_installs_enables_adds_group_and_reprobes() -> None:
    ex = RecordingExecutor([FRESH, INSTALLED_V1_JUST_ADDED])
    out = bootstrap_host(ex, host("distro"))
    assert descriptions(ex) == [
        "probe host facts",
        "apt-get update",
        "install docker.io, docker-compose",
        "enable and start docker",
        "add deploy to the docker group",
        "probe host facts",
    ]
    assert [c.argv for c in ex.ran[1:5]] == [
        ("apt-get", "-o", "DPkg::Lock::Timeout=300", "update"),
        (
            "apt-get",
            "-o",
            "DPkg::Lock::Timeout=300",
            "install",
            "-y",
            "docker.io",
            "docker-compose",
        ),
        ("systemctl", "enable", "--now", "docker"),
        ("usermod", "-aG", "docker", "deploy"),
    ]
    assert all(c.sudo for c in ex.ran[1:5])
    assert all(t is not None and t >= 600 for t in ex.timeouts[1:5])
    assert out.changed
    assert out.facts.compose == "v1"
    assert out.facts.docker_sudo  # group applies from the next login on
    assert out.steps == tuple(descriptions(ex)[1:5])
    assert "docker-compose 1.29.2" in out.detail
    assert "added deploy to the docker group (docker via sudo until the next login)" in out.detail


def test_second_run_after_install_is_a_no_op() -> None:
    ex = RecordingExecutor([INSTALLED_V1_JUST_ADDED])
    out = bootstrap_host(ex, host("distro"))
    assert len(ex.ran) == 1 and not out.changed
    assert out.detail.startswith("already bootstrapped")


def test_root_is_not_added_to_the_group() -> None:
    root_fresh = facts_text(user="root", uid="0", gid="0")
    root_done = facts_text(
        user="root",
        uid="0",
        gid="0",
        docker="1",
        docker_service="active",
        docker_reachable="1",
        compose="v2",
        compose_version="2.27.0",
    )
    ex = RecordingExecutor([root_fresh, root_done])
    out = bootstrap_host(ex, host("docker-ce"))
    assert "add root to the docker group" not in descriptions(ex)
    assert descriptions(ex)[-2] == "enable and start docker"
    assert descriptions(ex)[-3] == "install docker-ce"
    assert not out.facts.docker_sudo


def test_docker_present_but_no_compose_installs_only_compose() -> None:
    facts = facts_text(
        docker="1",
        docker_service="active",
        docker_reachable="1",
        docker_group="docker:x:998:deploy",
    )
    ex = RecordingExecutor([facts, READY_V2])
    bootstrap_host(ex, host("distro"))
    assert descriptions(ex)[1:-1] == ["apt-get update", "install docker-compose"]


def test_user_without_sudo_gets_one_clear_error_before_any_change() -> None:
    ex = RecordingExecutor([facts_text(sudo="0")])
    with pytest.raises(HostError) as e:
        bootstrap_host(ex, host("distro"))
    assert len(ex.ran) == 1
    assert str(e.value).startswith("web-1: bootstrap: user deploy has no passwordless sudo")


def test_unsupported_os_is_refused_by_name() -> None:
    ex = RecordingExecutor(
        [facts_text(os_id="centos", os_version_id="7", os_name="CentOS Linux 7")]
    )
    with pytest.raises(HostError) as e:
        bootstrap_host(ex, host("docker-ce"))
    assert len(ex.ran) == 1
    assert "web-1: bootstrap: unsupported OS 'CentOS Linux 7'" in str(e.value)


def test_unsupported_os_with_docker_already_there_is_fine() -> None:
    ready_elsewhere = READY_V2.replace("os_id=debian", "os_id=fedora")
    assert not bootstrap_host(RecordingExecutor([ready_elsewhere]), host()).changed


def test_install_none_only_checks() -> None:
    with pytest.raises(HostError) as e:
        bootstrap_host(RecordingExecutor([FRESH]), host("none"))
    assert "docker is not installed" in str(e.value)
    assert "install: distro" in (e.value.hint or "")

    # present, user not in the group but has sudo: usable through sudo, nothing run
    present = facts_text(docker="1", docker_service="active", compose="v2")
    ex = RecordingExecutor([present])
    out = bootstrap_host(ex, host("none"))
    assert len(ex.ran) == 1 and not out.changed
    assert out.facts.docker_sudo

    with pytest.raises(HostError, match="neither directly nor with sudo"):
        bootstrap_host(RecordingExecutor([present.replace("sudo=1", "sudo=0")]), host("none"))


def test_install_that_leaves_no_compose_fails_after_reprobe() -> None:
    broken_after = facts_text(docker="1", docker_service="active", docker_group="docker:x:9:deploy")
    ex = RecordingExecutor([FRESH, broken_after])
    with pytest.raises(HostError, match="neither `docker compose` nor `docker-compose`"):
        bootstrap_host(ex, host("distro"))


def test_a_failing_step_propagates_with_host_and_step() -> None:
    ex = RecordingExecutor([FRESH], fail_on="install docker.io, docker-compose")
    with pytest.raises(HostError) as e:
        bootstrap_host(ex, host("distro"))
    assert e.value.step == "install docker.io, docker-compose"
    assert descriptions(ex)[-1] == "install docker.io, docker-compose"  # nothing after it


def test_garbage_probe_output_is_a_host_error() -> None:
    with pytest.raises(HostError, match="web-1: probe host facts: host probe printed unexpected"):
        bootstrap_host(RecordingExecutor(["Last login: yesterday"]), host())


def test_bootstrap_commands_is_pure_and_mode_aware() -> None:
    from deployer.commands.facts import parse_facts

    fresh = parse_facts(FRESH)
    assert bootstrap_commands(fresh, "none") == []
    ce = [c.description for c in bootstrap_commands(fresh, "docker-ce")]
    assert ce[0] == "apt-get update" and "install docker-ce" in ce
    assert ce[-2:] == ["enable and start docker", "add deploy to the docker group"]
    stopped = parse_facts(READY_V2.replace("docker_service=active", "docker_service=inactive"))
    assert [c.description for c in bootstrap_commands(stopped, "distro")] == [
        "enable and start docker"
    ]
