"""``registry: none`` in the config (issue 17): where it may be written, what
the loader makes of it, and how plan and ship see it (pure code; the
transport itself is tested against a real sshd and the sandbox)."""

from __future__ import annotations

import json

import pytest
from conftest import BASIC_PROJECT, ENV, MakeProject

from deployer.config import load_project
from deployer.errors import ConfigError
from deployer.images.loopback import PORT_BASE, PORT_SPAN, loopback_port, loopback_server
from deployer.plan import image_refs

NO_REG_PROJECT = BASIC_PROJECT.replace(
    "registry:\n  server: registry.example.com:5000\n  username: ci-bot\n"
    "  password: ${REGISTRY_PASSWORD}\n", "registry: none\n")


def test_registry_none_in_deployer_yaml(make_project: MakeProject) -> None:
    assert "registry: none" in NO_REG_PROJECT
    p = load_project(make_project({"deployer.yaml": NO_REG_PROJECT}), "prod", ENV)
    assert p.registry.none
    assert p.registry.server == loopback_server("shop")
    assert p.registry.username is None and p.registry.password is None
    # Offline refs (check, plan) name the loopback registry the hosts pull from.
    assert image_refs(p, "v1") == {"web": f"{loopback_server('shop')}/shop/web:v1"}


def test_registry_none_in_one_inventory_only(make_project: MakeProject) -> None:
    root = make_project({"inventories/prod.yaml": "registry: none\nhosts: {h: {}}\n",
                         "inventories/stage.yaml": "hosts: {h: {}}\n"})
    prod = load_project(root, "prod", {})  # deployer.yaml's ${REGISTRY_PASSWORD} not needed
    assert prod.registry.none
    stage = load_project(root, "stage", ENV)
    assert not stage.registry.none and stage.registry.server == "registry.example.com:5000"


@pytest.mark.parametrize("text, expect", [
    ("registry: nope\n", "mapping"),
    ("registry: {none: true}\n", "registry: none"),
])
def test_other_words_are_refused_with_the_file_and_line(
        make_project: MakeProject, text: str, expect: str) -> None:
    root = make_project({"inventories/prod.yaml": text + "hosts: {h: {}}\n"})
    with pytest.raises(ConfigError) as e:
        load_project(root, "prod", ENV)
    assert "inventories/prod.yaml:1" in e.value.message and expect in e.value.message


def test_port_is_stable_per_app_and_in_range() -> None:
    assert loopback_port("shop") == loopback_port("shop")
    assert loopback_port("shop") != loopback_port("flaskpg")
    for app in ("a", "shop", "rollapp", "x" * 60):
        assert PORT_BASE <= loopback_port(app) < PORT_BASE + PORT_SPAN
    assert loopback_server("shop") == f"127.0.0.1:{loopback_port('shop')}"


def test_plan_shows_what_each_host_would_be_sent(make_project: MakeProject) -> None:
    from test_cli import deployer

    root = make_project({"deployer.yaml": NO_REG_PROJECT})
    p = deployer("-C", str(root), "-o", "json", "plan", "prod")
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert data["images"]["web"].startswith(loopback_server("shop") + "/shop/web:")
    for host in data["hosts"]:
        sent = host["images_sent"]["web"]
        # Nothing was built for this tag: no size can be known, and plan says why.
        assert sent["bytes"] is None and sent["why"]
        steps = {s["step"]: s for s in host["steps"]}
        assert "registry login" not in steps  # no credentials anywhere
        assert steps["pull images"]["note"].startswith("over this host's SSH connection")
    text = deployer("-C", str(root), "plan", "prod", "--no-files")
    assert "pull images (over this host's SSH connection (registry: none): web " in text.stdout


def test_schema_offers_the_word_none_and_no_none_key() -> None:
    import jsonschema

    from deployer.config.models import ProjectConfig

    schema = ProjectConfig.model_json_schema()
    base = {"app": "shop"}
    jsonschema.validate({**base, "registry": "none"}, schema)
    jsonschema.validate({**base, "registry": {"server": "r:5000"}}, schema)
    for bad in ({"none": True}, "nope"):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**base, "registry": bad}, schema)
