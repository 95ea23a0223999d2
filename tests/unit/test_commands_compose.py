"""Compose command lines for v2 (plugin) and v1 (docker-compose)."""

from __future__ import annotations

import pytest

from deployer.commands.compose import Compose

V2 = Compose(app="shop", file="docker-compose.yaml", variant="v2")
V1 = Compose(app="shop", file="docker-compose.yaml", variant="v1")
BASE2 = ("docker", "compose", "-p", "shop", "-f", "docker-compose.yaml")
BASE1 = ("docker-compose", "-p", "shop", "-f", "docker-compose.yaml")


@pytest.mark.parametrize(("compose", "base"), [(V2, BASE2), (V1, BASE1)])
def test_argv_per_variant(compose: Compose, base: tuple[str, ...]) -> None:
    assert compose.pull().argv == (*base, "pull", "--quiet")
    assert compose.up().argv == (*base, "up", "-d", "--remove-orphans")
    assert compose.ps().argv == (*base, "ps", "-a")
    assert compose.services().argv == (*base, "config", "--services")
    assert compose.down().argv == (*base, "down", "--remove-orphans")
    assert compose.stop(["web"]).argv == (*base, "stop", "web")
    assert compose.logs().argv == (*base, "logs", "--no-color", "--tail", "100")
    assert compose.logs("web", tail=20, follow=True).argv == (
        *base,
        "logs",
        "--no-color",
        "--tail",
        "20",
        "--follow",
        "web",
    )
    assert compose.logs(tail=None).argv == (*base, "logs", "--no-color")


def test_down_never_removes_volumes() -> None:
    for c in (V1, V2):
        assert "-v" not in c.down().argv
        assert "--volumes" not in c.down().argv


def test_up_with_services_does_not_start_dependencies() -> None:
    assert V2.up(["web", "worker"]).argv == (
        *BASE2,
        "up",
        "-d",
        "--remove-orphans",
        "--no-deps",
        "web",
        "worker",
    )
    assert V1.pull(["web"]).argv == (*BASE1, "pull", "--quiet", "web")


def test_exec_without_tty_unless_interactive() -> None:
    assert V2.exec("web", ["flask", "db", "upgrade"]).argv == (
        *BASE2,
        "exec",
        "-T",
        "web",
        "flask",
        "db",
        "upgrade",
    )
    assert V1.exec("web", ["bash"], interactive=True).argv == (*BASE1, "exec", "web", "bash")
    with pytest.raises(ValueError):
        V2.exec("web", [])


def test_release_dir_env_and_sudo_in_the_shell_line() -> None:
    c = Compose(
        app="shop",
        variant="v2",
        sudo=True,
        cwd="/opt/shop/releases/20260101T000000Z-abc",
        env=(("DOCKER_CONFIG", "/opt/shop/.docker-config-20260101T000000Z-abc"),),
    )
    up = c.up()
    assert up.sudo and up.cwd == "/opt/shop/releases/20260101T000000Z-abc"
    assert up.shell() == (
        "sudo -n -- sh -c 'cd /opt/shop/releases/20260101T000000Z-abc && "
        "env DOCKER_CONFIG=/opt/shop/.docker-config-20260101T000000Z-abc "
        "docker compose -p shop -f docker-compose.yaml up -d --remove-orphans'"
    )
    assert c.up().shell(as_root=True) == (
        "cd /opt/shop/releases/20260101T000000Z-abc && "
        "env DOCKER_CONFIG=/opt/shop/.docker-config-20260101T000000Z-abc "
        "docker compose -p shop -f docker-compose.yaml up -d --remove-orphans"
    )


def test_descriptions_are_set() -> None:
    for cmd in (V2.pull(), V2.up(), V2.ps(), V2.logs("web"), V2.down(), V2.exec("web", ["true"])):
        assert cmd.description.startswith("compose ")


def test_profiles_go_on_every_command_v1_and_v2() -> None:
    v2 = Compose("shop", profiles=("debug", "jobs"))
    assert v2.up().argv == ("docker", "compose", "-p", "shop", "-f", "docker-compose.yaml",
                            "--profile", "debug", "--profile", "jobs",
                            "up", "-d", "--remove-orphans")
    v1 = Compose("shop", variant="v1", profiles=("jobs",))
    assert v1.pull().argv == ("docker-compose", "-p", "shop", "-f", "docker-compose.yaml",
                              "--profile", "jobs", "pull", "--quiet")
