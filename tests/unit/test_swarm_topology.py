"""``target: swarm`` in the inventory: the managers, and what check refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ENV, MakeProject

from deployer.config import load_project
from deployer.deploy import api
from deployer.errors import ConfigError
from deployer.swarm.topology import check, topology

SWARM_INV = """\
ssh: {user: deploy}
target: swarm
vars: {greeting: hello, db_password: "${DB_PASSWORD}", workers: 1}
groups:
  managers:
    hosts:
      mgr-1: {address: 203.0.113.10}
  nodes:
    hosts:
      node-1: {address: 203.0.113.11}
      node-2: {address: 203.0.113.12}
"""


def load(root: Path):
    return load_project(root, "prod", ENV)


def test_default_manager_is_the_first_host(make_project: MakeProject) -> None:
    t = check(load(make_project({"inventories/prod.yaml": SWARM_INV})))
    assert [h.name for h in t.managers] == ["mgr-1"]
    assert [h.name for h in t.workers] == ["node-1", "node-2"]
    assert t.first.name == "mgr-1"


def test_managers_by_host_and_group_name(make_project: MakeProject) -> None:
    inv = SWARM_INV + "swarm: {managers: [node-2, managers]}\n"
    t = topology(load(make_project({"inventories/prod.yaml": inv})))
    assert [h.name for h in t.managers] == ["mgr-1", "node-2"]  # inventory order
    assert [h.name for h in t.workers] == ["node-1"]


def test_an_unknown_manager_is_named(make_project: MakeProject) -> None:
    inv = SWARM_INV + "swarm:\n  managers: [mgr-9]\n"
    with pytest.raises(ConfigError) as e:
        topology(load(make_project({"inventories/prod.yaml": inv})))
    assert e.value.message == ("inventories/prod.yaml:13:14: swarm.managers: 'mgr-9' is "
                               "neither a host nor a group")
    assert e.value.hint == "hosts here: mgr-1, node-1, node-2"


def test_check_refuses_host_level_vars(make_project: MakeProject) -> None:
    inv = SWARM_INV.replace("node-2: {address: 203.0.113.12}",
                            "node-2: {address: 203.0.113.12, vars: {workers: 8}}")
    root = make_project({"inventories/prod.yaml": inv})
    with pytest.raises(ConfigError) as e:
        api.load(api.Target(root, "prod", environ=ENV))
    assert e.value.message == (
        "inventories/prod.yaml:11:39: host 'node-2' has vars of its own; with target: swarm "
        "the files are rendered once for the whole cluster (one stack serves every node)")
    assert e.value.hint == ("move them to the inventory's or a group's vars, "
                            "or use target: compose")


def test_host_vars_are_fine_with_compose(make_project: MakeProject) -> None:
    root = make_project()  # the basic inventory has host vars and no target
    project, hosts, _ = api.load(api.Target(root, "prod", environ=ENV))
    assert project.inventory.target == "compose" and len(hosts) == 2


def test_group_roles_do_not_apply_to_a_swarm(make_project: MakeProject) -> None:
    inv = SWARM_INV.replace("  nodes:\n", "  nodes:\n    services: [web]\n")
    with pytest.raises(ConfigError, match=r"groups\.nodes\.services does not apply to target: "
                       "swarm"):
        check(load(make_project({"inventories/prod.yaml": inv})))


def test_swarm_key_without_the_swarm_target(make_project: MakeProject) -> None:
    inv = SWARM_INV.replace("target: swarm\n", "") + "swarm: {managers: [mgr-1]}\n"
    with pytest.raises(ConfigError, match="'swarm' applies to 'target: swarm' only"):
        load(make_project({"inventories/prod.yaml": inv}))


def test_unknown_target_is_a_config_error(make_project: MakeProject) -> None:
    inv = SWARM_INV.replace("target: swarm", "target: kubernetes")
    with pytest.raises(ConfigError, match="target"):
        load(make_project({"inventories/prod.yaml": inv}))


def test_check_refuses_a_relative_data_bind_in_swarm_mode(make_project: MakeProject) -> None:
    # the basic compose file mounts ./data:/data, which is data (not uploaded)
    root = make_project({"inventories/prod.yaml": SWARM_INV})
    with pytest.raises(ConfigError) as e:
        api.render(api.Target(root, "prod", environ=ENV), tag="t1")
    assert e.value.message == (
        "templates/docker-compose.yaml.j2: service web: volumes[1]: bind mount source "
        "'./data' is data; with target: swarm one stack serves every node, and a directory "
        "on one node is not there on another")


def test_check_passes_a_swarm_project_without_data_binds(make_project: MakeProject) -> None:
    compose = "services:\n  web:\n    image: {{ images.web }}\n" \
              "    volumes: [./app.conf:/etc/app.conf]\n"
    root = make_project({"inventories/prod.yaml": SWARM_INV,
                         "templates/docker-compose.yaml.j2": compose})
    plan = api.render(api.Target(root, "prod", environ=ENV), tag="t1")
    assert [hp.host.name for hp in plan.hosts] == ["mgr-1", "node-1", "node-2"]


def test_registry_none_and_remote_hooks_are_refused_not_ignored(
        make_project: MakeProject) -> None:
    from conftest import BASIC_PROJECT

    no_reg = BASIC_PROJECT.replace(
        "registry:\n  server: registry.example.com:5000\n  username: ci-bot\n"
        "  password: ${REGISTRY_PASSWORD}\n", "registry: none\n")
    root = make_project({"inventories/prod.yaml": SWARM_INV, "deployer.yaml": no_reg})
    with pytest.raises(ConfigError) as e:
        check(load(root))
    assert e.value.message == ("deployer.yaml:2:1: registry: none does not work with target: "
                               "swarm: every node pulls the stack's images from a registry")
    hooked = BASIC_PROJECT + "hooks:\n  post_up: [./smoke-test]\n"
    root = make_project({"inventories/prod.yaml": SWARM_INV, "deployer.yaml": hooked})
    with pytest.raises(ConfigError) as e:
        check(load(root))
    assert e.value.message == ("deployer.yaml:17:3: hooks.post_up runs on each host around "
                               "compose up, which target: swarm does not do")
