"""Bad input is one ConfigError naming the place: files that are not regular
files, hostile YAML, hostile values in the models."""

from __future__ import annotations

import math
import os
import re
import threading
from pathlib import Path

import pytest
from conftest import ENV, MakeProject
from pydantic import ValidationError

from deployer.config import load_project
from deployer.config.models import (
    HostConfig,
    InventoryConfig,
    ProjectConfig,
    RegistryConfig,
    RolloutConfig,
    SSHConfig,
    check_address,
)
from deployer.config.readfile import read_text
from deployer.config.yamlfile import MAX_DEPTH, parse_yaml
from deployer.errors import ConfigError

# -- files --------------------------------------------------------------------


def test_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    result: list[BaseException] = []

    def read() -> None:
        try:
            read_text(fifo, "f", "secrets_file")
        except ConfigError as e:
            result.append(e)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive(), "reading a FIFO blocked"
    assert "is a FIFO" in str(result[0])


@pytest.mark.parametrize(("make", "needle"), [
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: p.write_bytes(b"ok\n\xff"), "f:2: template is not valid UTF-8"),
    (lambda p: p.write_bytes(b"x" * 2000), "more than the limit of 1000"),
    (lambda p: None, "template not found"),
])
def test_bad_files(tmp_path: Path, make: object, needle: str) -> None:
    p = tmp_path / "f"
    make(p)  # type: ignore[operator]
    with pytest.raises(ConfigError, match=needle):
        read_text(p, "f", "template", limit=1000)


def test_device_and_odd_paths() -> None:
    with pytest.raises(ConfigError, match="is a device"):
        read_text("/dev/zero", "/dev/zero", "secrets_file")
    with pytest.raises(ConfigError, match="path is empty"):
        read_text("", "", "secrets_file")
    with pytest.raises(ConfigError, match="not a usable path"):
        read_text("a" * 10_000, "a" * 10_000, "template")


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "f"
    p.write_text("x")

    def denied(*a: object, **k: object) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", denied)  # root can read anything: simulate it
    with pytest.raises(ConfigError, match="not readable"):
        read_text(p, "f", "secrets_file")


def test_secrets_file_directory_and_empty(make_project: MakeProject) -> None:
    inv = "secrets_file: {}\nhosts: {{h1: {{address: 10.0.0.1}}}}\nvars: {{db_password: x}}\n"
    root = make_project({"inventories/prod.yaml": inv.format("templates")})
    with pytest.raises(ConfigError, match="templates: secrets_file is a directory"):
        load_project(root, "prod", ENV)
    root = make_project({"inventories/prod.yaml": inv.format('""')})
    with pytest.raises(ConfigError, match=r"prod.yaml:1:1: secrets_file must be a path \(it is"):
        load_project(root, "prod", ENV)


def test_long_environment_name(make_project: MakeProject) -> None:
    with pytest.raises(ConfigError, match=r"environment name 'ppp.*is not valid"):
        load_project(make_project(), "p" * 300, ENV)


# -- YAML ---------------------------------------------------------------------


def parse(text: str) -> object:
    return parse_yaml(text, Path("f.yaml"), "f.yaml")[0]


@pytest.mark.parametrize(("text", "needle"), [
    ("a: !!python/object:os.system x", "f.yaml:1:4: unsupported YAML tag !!python/object"),
    ("a: !!python/name:os.system", "unsupported YAML tag"),
    ("a: !foo x", "unsupported YAML tag !foo"),
    ("a: !!binary aGk=", "unsupported YAML tag !!binary"),
    ("a: !!int abc", "f.yaml:1:4: 'abc' is not a valid int"),
    ("a: !!float x", "is not a valid float"),
    ("a: !!timestamp x", "is not a valid timestamp"),
    ("<<: 5", "merge key"),
    ("a: &l [*l]", "f.yaml:1:4: an alias refers to a value that contains it"),
    ("a: &m {b: *m}", "recursion"),
    ("a: " + "[" * 1000 + "]" * 1000, f"nested more than {MAX_DEPTH} levels"),
    ("? [a]\n: 1", "keys must be plain strings"),
    ("a: 1\na: 2", "duplicate key 'a'"),
])
def test_hostile_yaml(text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)):
        parse(text)


def test_alias_bomb_is_bounded() -> None:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{n}: &a{n} [" + ",".join([f"*a{n - 1}"] * 9) + "]" for n in range(1, 9)]
    with pytest.raises(ConfigError, match="more than 100000 values"):
        parse("\n".join(lines))


def test_merge_keys_own_keys_win_and_aliases_still_work() -> None:
    data = parse("base: &b {x: 1, y: 2}\nc: {<<: *b, x: 3}\nd: {<<: [*b, {z: 4}]}\ne: *b")
    assert data == {"base": {"x": 1, "y": 2}, "c": {"x": 3, "y": 2},
                    "d": {"x": 1, "y": 2, "z": 4}, "e": {"x": 1, "y": 2}}


# -- values -----------------------------------------------------------------------


@pytest.mark.parametrize("good", ["web-1", "203.0.113.10", "db.internal", "host_1.example.com",
                                  "[2001:db8::1]", "2001:db8::1", "fe80::1%eth0", "x."])
def test_addresses_accepted(good: str) -> None:
    assert check_address(good) == good.strip("[]")


@pytest.mark.parametrize("bad", [
    "x.internal:22 -oProxyCommand=touch${IFS}PWNED y.internal", "a;b", "$(id)", "-oFoo",
    "a b", "a\nb", "a\x00b", "web-\udcff", "[/data]", "host:22", "[::1]:22", "", "a..b",
    "`id`", "x" * 300, "[not-ipv6]",
])
def test_addresses_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="is not a host name"):
        check_address(bad)
    with pytest.raises(ValidationError):
        HostConfig(address=bad)


def test_host_names_users_and_proxy_jump() -> None:
    for name in ["[/data]", "-x", "a b", "web-\udcff", "x" * 300, "a;b"]:
        with pytest.raises(ValidationError, match="host name"):
            InventoryConfig.model_validate({"hosts": {name: {"address": "10.0.0.1"}}})
    with pytest.raises(ValidationError, match="no address and its name is not one"):
        InventoryConfig.model_validate({"hosts": {"web_1.": None, "x--": None, "a.-b": None}})
    for user in ["deploy;id", "-oFoo", "a b", "root\n", "$(id)", "9lives"]:
        with pytest.raises(ValidationError, match="ssh user"):
            SSHConfig(user=user)
    assert SSHConfig(user="deploy").user == "deploy"
    for jump in ["-oProxyCommand=x", "bastion;id", "u;x@bastion", "bastion:99999", "a,,b",
                 "[::1"]:
        with pytest.raises(ValidationError):
            SSHConfig(proxy_jump=jump)
    for jump in ["bastion", "ops@bastion:2222,inner", "ssh://u@[::1]:22", "none"]:
        assert SSHConfig(proxy_jump=jump).proxy_jump == jump


def project(**kw: object) -> ProjectConfig:
    return ProjectConfig.model_validate({"app": "shop", **kw})


@pytest.mark.parametrize("bad", ["/", "/etc", "/etc/shop", "/usr", "/var", "/home", "/root",
                                 "/opt/../..", "/opt/shop/../../etc", "relative", "//",
                                 "/proc/1", "/dev", "/boot", "/sys/x", "/opt/a\nb"])
def test_deploy_dir_refused(bad: str) -> None:
    with pytest.raises(ValidationError, match="deploy_dir"):
        project(deploy_dir=bad)


def test_deploy_dir_normalised() -> None:
    assert project(deploy_dir="/opt//shop/./").deploy_dir == "/opt/shop"
    assert project(deploy_dir="/srv/shop").remote_dir == "/srv/shop"
    assert project().remote_dir == "/opt/shop"


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 10**9])
def test_durations_bounded(value: float) -> None:
    with pytest.raises(ValidationError):
        RolloutConfig(pause=value)
    with pytest.raises(ValidationError):
        SSHConfig(connect_timeout=value)
    with pytest.raises(ValidationError):
        project(health_timeout=value)


@pytest.mark.parametrize("bad", ["/etc/passwd", "../x.j2", "templates/../../x", "~/x",
                                 "a" * 2000, "templates/" + "a" * 300, "a\x00b", ""])
def test_template_paths_stay_in_the_project(bad: str) -> None:
    with pytest.raises(ValidationError, match="template"):
        project(files=[{"template": bad, "dest": "x"}])


def test_empty_registry_password_says_so() -> None:
    with pytest.raises(ValidationError, match="password is empty"):
        RegistryConfig(username="ci", password="")
    with pytest.raises(ValidationError, match="username and password go together"):
        RegistryConfig(username="ci")
