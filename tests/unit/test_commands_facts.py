"""The host probe: one read-only script, and the parser of its output."""

from __future__ import annotations

import os
import subprocess

import pytest

from deployer.commands.facts import facts_script, parse_facts
from deployer.errors import DeployError

FRESH_DEBIAN_ROOT = """\
deployer_facts=1
os_id=debian
os_version_id=12
os_codename=bookworm
os_name=Debian GNU/Linux 12 (bookworm)
user=root
uid=0
gid=0
sudo=1
arch=amd64
docker_group=
systemd=1
docker_service=inactive
docker_socket=0
docker=0
"""

UBUNTU_JUST_ADDED = """\
deployer_facts=1
os_id=ubuntu
os_version_id=24.04
os_codename=noble
os_name=Ubuntu 24.04.1 LTS
user=deploy
uid=1000
gid=1000
sudo=1
arch=arm64
docker_group=docker:x:999:deploy
systemd=1
docker_service=active
docker_socket=1
docker=1
docker_reachable=0
compose=v2
compose_version=2.27.1
"""

DEBIAN_V1_IN_GROUP = """\
deployer_facts=1
os_id=debian
os_version_id=12
os_codename=bookworm
user=deploy
uid=1000
gid=1000
sudo=0
arch=amd64
docker_group=docker:x:998:alice,deploy
systemd=1
docker_service=active
docker_socket=1
docker=1
docker_reachable=1
docker_server_version=20.10.24+dfsg1
compose_v1_version=1.29.2
"""


def test_probe_is_one_read_only_command_without_sudo() -> None:
    cmd = facts_script().command()
    assert cmd.argv[:2] == ("sh", "-c")
    assert cmd.sudo is False
    assert cmd.argv[3:] == ("sh",)  # no arguments: nothing to splice
    for needle in (
        "/etc/os-release",
        "sudo -n true",
        "dpkg --print-architecture",
        "systemctl is-active docker",
        "getent group docker",
        "docker compose version",
        "docker-compose version",
    ):
        assert needle in cmd.argv[2]


def test_fresh_debian_as_root() -> None:
    f = parse_facts(FRESH_DEBIAN_ROOT)
    assert (f.os_id, f.os_version_id, f.os_codename, f.arch) == (
        "debian",
        "12",
        "bookworm",
        "amd64",
    )
    assert f.is_root and f.can_sudo
    assert not f.docker_installed and not f.docker_active
    assert f.compose is None
    assert f.docker_group_gid is None and not f.in_docker_group
    assert not f.bootstrapped
    assert not f.docker_sudo  # root never needs sudo


def test_user_just_added_to_docker_group_needs_sudo_this_session() -> None:
    f = parse_facts(UBUNTU_JUST_ADDED)
    assert f.user == "deploy" and not f.is_root
    assert f.in_docker_group  # per /etc/group: effective after re-login
    assert not f.docker_reachable
    assert f.docker_sudo  # this session: docker through sudo -n
    assert f.compose == "v2" and f.compose_version == "2.27.1"
    assert f.bootstrapped
    assert f.os_label == "ubuntu 24.04"


def test_v1_compose_and_direct_access() -> None:
    f = parse_facts(DEBIAN_V1_IN_GROUP)
    assert f.compose == "v1" and f.compose_version == "1.29.2"
    assert f.docker_group_gid == 998 and f.docker_group_members == ("alice", "deploy")
    assert f.in_docker_group and not f.docker_sudo
    assert not f.sudo and not f.can_sudo
    assert f.docker_server_version == "20.10.24+dfsg1"


def test_v2_plugin_wins_over_docker_compose_binary() -> None:
    f = parse_facts(DEBIAN_V1_IN_GROUP + "compose=v2\ncompose_version=2.20.2\n")
    assert f.compose == "v2" and f.compose_version == "2.20.2"


def test_primary_group_docker_counts_as_member() -> None:
    text = DEBIAN_V1_IN_GROUP.replace("docker:x:998:alice,deploy", "docker:x:1000:").replace(
        "docker_reachable=1", "docker_reachable=0"
    )
    f = parse_facts(text)
    assert f.docker_group_members == ()
    assert f.in_docker_group
    assert f.docker_sudo


def test_no_systemd_uses_the_socket_for_active() -> None:
    text = FRESH_DEBIAN_ROOT.replace("systemd=1\ndocker_service=inactive\n", "systemd=0\n")
    assert not parse_facts(text).docker_active
    assert parse_facts(text.replace("docker_socket=0", "docker_socket=1")).docker_active


def test_inactive_service_is_not_bootstrapped() -> None:
    f = parse_facts(UBUNTU_JUST_ADDED.replace("docker_service=active", "docker_service=failed"))
    assert not f.docker_active and not f.bootstrapped


def test_values_with_equals_signs_survive() -> None:
    f = parse_facts(FRESH_DEBIAN_ROOT.replace("os_name=Debian", "os_name=A=B Debian"))
    assert f.os_name.startswith("A=B Debian")


@pytest.mark.parametrize(
    "garbage", ["", "Welcome to Ubuntu!\nos_id=ubuntu\n", "sh: 1: Syntax error"]
)
def test_output_without_marker_is_an_error_not_no_docker(garbage: str) -> None:
    with pytest.raises(DeployError, match="unexpected output"):
        parse_facts(garbage)


def _os_release() -> dict[str, str]:
    out: dict[str, str] = {}
    with open("/etc/os-release") as fh:
        for line in fh:
            k, _, v = line.strip().partition("=")
            out[k] = v.strip('"')
    return out


@pytest.mark.skipif(not os.path.exists("/etc/os-release"), reason="needs /etc/os-release")
def test_probe_runs_under_posix_sh_and_parses() -> None:
    """The real script, run by dash/sh on this machine, parses consistently."""
    cmd = facts_script().command()
    proc = subprocess.run(
        ["sh", "-c", cmd.shell()], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    f = parse_facts(proc.stdout)
    rel = _os_release()
    assert f.os_id == rel.get("ID", "").lower()
    assert f.os_version_id == rel.get("VERSION_ID", "")
    assert f.uid == os.getuid()
    assert f.is_root == (os.getuid() == 0)
    assert f.user != ""
