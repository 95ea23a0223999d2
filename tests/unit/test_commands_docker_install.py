"""Docker install commands per OS and mode: the exact command lines."""

from __future__ import annotations

import os
import stat
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from deployer.commands.docker_install import (
    JAMMY_COMPOSE_SCRIPT,
    UnsupportedOSError,
    add_to_docker_group,
    check_present,
    compose_install,
    docker_install,
    enable_service,
)
from deployer.commands.facts import HostFacts
from deployer.errors import DeployError

APT = "apt-get -o DPkg::Lock::Timeout=300"
SUDO_APT = "sudo -n -- sh -c 'env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300"

DEBIAN12 = HostFacts(
    os_id="debian",
    os_version_id="12",
    os_codename="bookworm",
    arch="amd64",
    user="deploy",
    uid=1000,
)
UBUNTU2204 = HostFacts(
    os_id="ubuntu",
    os_version_id="22.04",
    os_codename="jammy",
    arch="amd64",
    user="deploy",
    uid=1000,
)
UBUNTU2404 = HostFacts(
    os_id="ubuntu",
    os_version_id="24.04",
    os_codename="noble",
    arch="arm64",
    user="deploy",
    uid=1000,
)


def lines(cmds: list) -> list[str]:
    return [c.shell(as_root=True) for c in cmds]


def test_docker_ce_ubuntu_2404_follows_dockers_guide() -> None:
    cmds = docker_install(UBUNTU2404, "docker-ce")
    assert all(c.sudo for c in cmds)
    assert all(c.description for c in cmds)
    assert lines(cmds) == [
        f"env DEBIAN_FRONTEND=noninteractive {APT} update",
        f"env DEBIAN_FRONTEND=noninteractive {APT} install -y ca-certificates curl",
        "install -m 0755 -d /etc/apt/keyrings",
        "curl -fsSL https://download.docker.com/linux/ubuntu/gpg -o /etc/apt/keyrings/docker.asc",
        "chmod a+r /etc/apt/keyrings/docker.asc",
        'sh -c \'printf "%s\\n" "$1" > "$2"\' sh '
        "'deb [arch=arm64 signed-by=/etc/apt/keyrings/docker.asc] "
        "https://download.docker.com/linux/ubuntu noble stable' "
        "/etc/apt/sources.list.d/docker.list",
        f"env DEBIAN_FRONTEND=noninteractive {APT} update",
        f"env DEBIAN_FRONTEND=noninteractive {APT} install -y docker-ce docker-ce-cli "
        "containerd.io docker-buildx-plugin docker-compose-plugin",
    ]


def test_docker_ce_debian_12_uses_the_debian_repository() -> None:
    out = lines(docker_install(DEBIAN12, "docker-ce"))
    assert out[3] == (
        "curl -fsSL https://download.docker.com/linux/debian/gpg -o /etc/apt/keyrings/docker.asc"
    )
    assert (
        "'deb [arch=amd64 signed-by=/etc/apt/keyrings/docker.asc] "
        "https://download.docker.com/linux/debian bookworm stable'" in out[5]
    )


def test_docker_ce_ubuntu_2204_codename() -> None:
    out = lines(docker_install(UBUNTU2204, "docker-ce"))
    assert "https://download.docker.com/linux/ubuntu jammy stable'" in out[5]


def test_non_root_lines_go_through_sudo_n_with_the_env_inside() -> None:
    first = docker_install(DEBIAN12, "docker-ce")[0]
    assert first.shell() == f"{SUDO_APT} update'"


def test_sources_line_written_by_the_script_is_exact(tmp_path: Path) -> None:
    """Run the sources-writing step for real, into a temporary path."""
    step = docker_install(UBUNTU2404, "docker-ce")[5]
    target = tmp_path / "docker.list"
    argv = (*step.argv[:-1], str(target))
    subprocess.run(list(argv), check=True)
    assert target.read_text() == (
        "deb [arch=arm64 signed-by=/etc/apt/keyrings/docker.asc] "
        "https://download.docker.com/linux/ubuntu noble stable\n"
    )


def test_distro_debian_12_installs_docker_io_and_compose_v1() -> None:
    assert lines(docker_install(DEBIAN12, "distro")) == [
        f"env DEBIAN_FRONTEND=noninteractive {APT} update",
        f"env DEBIAN_FRONTEND=noninteractive {APT} install -y docker.io docker-compose",
    ]


def test_distro_ubuntu_2404_installs_docker_compose_v2() -> None:
    assert lines(docker_install(UBUNTU2404, "distro")) == [
        f"env DEBIAN_FRONTEND=noninteractive {APT} update",
        f"env DEBIAN_FRONTEND=noninteractive {APT} install -y docker.io docker-compose-v2",
    ]


def test_distro_ubuntu_2204_lets_apt_choose_v2_or_v1() -> None:
    cmds = docker_install(UBUNTU2204, "distro")
    assert len(cmds) == 2
    install = cmds[1]
    assert install.sudo
    assert install.env == (("DEBIAN_FRONTEND", "noninteractive"),)
    assert install.argv == (
        "sh",
        "-c",
        JAMMY_COMPOSE_SCRIPT,
        "sh",
        "apt-get",
        "-o",
        "DPkg::Lock::Timeout=300",
        "install",
        "-y",
        "docker.io",
    )


@pytest.mark.parametrize(
    ("has_v2", "expected"), [(True, "docker-compose-v2"), (False, "docker-compose")]
)
def test_jammy_choice_script_runs(tmp_path: Path, has_v2: bool, expected: str) -> None:
    """Run the choice with a fake apt-cache: it appends the package apt has."""
    fake = tmp_path / "apt-cache"
    fake.write_text(f"#!/bin/sh\nexit {0 if has_v2 else 100}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    out = subprocess.run(
        ["sh", "-c", JAMMY_COMPOSE_SCRIPT, "sh", "echo", "install", "-y", "docker.io"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert out.stdout == f"install -y docker.io {expected}\n"


@pytest.mark.parametrize(
    "facts",
    [
        replace(
            DEBIAN12, os_version_id="11", os_codename="bullseye", os_name="Debian GNU/Linux 11"
        ),
        replace(
            UBUNTU2404, os_version_id="20.04", os_codename="focal", os_name="Ubuntu 20.04.6 LTS"
        ),
        HostFacts(os_id="fedora", os_version_id="40", os_name="Fedora Linux 40"),
    ],
)
@pytest.mark.parametrize("mode", ["docker-ce", "distro"])
def test_unsupported_os_is_refused_by_name(facts: HostFacts, mode: str) -> None:
    with pytest.raises(UnsupportedOSError) as e:
        docker_install(facts, mode)
    assert facts.os_name in e.value.message
    assert "Ubuntu 22.04, Ubuntu 24.04, Debian 12" in e.value.message
    assert "install: none" in (e.value.hint or "")


def test_none_installs_nothing() -> None:
    assert docker_install(HostFacts(os_id="fedora", os_version_id="40"), "none") == []


def test_unknown_mode() -> None:
    with pytest.raises(DeployError, match="unknown docker install mode 'snap'"):
        docker_install(DEBIAN12, "snap")


def test_compose_only_docker_ce_adds_the_plugin() -> None:
    out = lines(compose_install(DEBIAN12, "docker-ce"))
    assert out[-1] == f"env DEBIAN_FRONTEND=noninteractive {APT} install -y docker-compose-plugin"
    assert "docker-ce " not in out[-1]


def test_compose_only_distro() -> None:
    assert lines(compose_install(DEBIAN12, "distro"))[-1] == (
        f"env DEBIAN_FRONTEND=noninteractive {APT} install -y docker-compose"
    )
    jammy = compose_install(UBUNTU2204, "distro")[-1]
    assert jammy.argv[2] == JAMMY_COMPOSE_SCRIPT
    assert jammy.argv[3:] == ("sh", "apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y")


def test_enable_service_and_group() -> None:
    with_systemd = enable_service(replace(DEBIAN12, systemd=True))
    assert with_systemd.shell() == "sudo -n -- sh -c 'systemctl enable --now docker'"
    assert enable_service(DEBIAN12).argv == ("service", "docker", "start")
    group = add_to_docker_group("deploy")
    assert group.sudo and group.argv == ("usermod", "-aG", "docker", "deploy")


def test_check_present_says_what_is_missing() -> None:
    with pytest.raises(DeployError) as e:
        check_present(DEBIAN12)
    assert "docker is not installed" in e.value.message
    assert "docker compose" in e.value.message
    ok = replace(DEBIAN12, docker_installed=True, docker_service="active", compose="v1")
    check_present(ok)  # does not raise
    with pytest.raises(DeployError, match="not running"):
        check_present(replace(ok, docker_service="inactive"))
