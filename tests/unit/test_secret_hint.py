"""The hint for an unset ``${VAR}`` names where a secret can come from: the
environment, or the inventory's ``secrets_file`` (said what it is), or how to
set one; never a file that ``deployer sandbox`` owns."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import MakeProject

from deployer.config import load_project
from deployer.errors import ConfigError

PROJECT = "app: shop\n"
VARS = 'vars: {db_password: "${DB_PASSWORD}"}\n'


def hint_for(root: Path, env: str) -> tuple[str, str]:
    with pytest.raises(ConfigError) as e:
        load_project(root, env, environ={})
    assert "environment variable DB_PASSWORD is not set" in e.value.message
    return e.value.message, e.value.hint or ""


def test_without_secrets_file_the_hint_says_how_to_set_one(make_project: MakeProject) -> None:
    root = make_project({"deployer.yaml": PROJECT,
                         "inventories/prod.yaml": VARS + "hosts: {h1: {}}\n"})
    message, hint = hint_for(root, "prod")
    assert message.startswith("inventories/prod.yaml:1:")
    assert hint.startswith("export DB_PASSWORD=... in the environment, or ")
    assert "name that file in inventories/prod.yaml as `secrets_file: .deployer/<env>.env`" \
        in hint
    assert "the environment wins over it" in hint


def test_with_secrets_file_the_hint_names_it_and_says_what_it_is(
        make_project: MakeProject) -> None:
    root = make_project({"deployer.yaml": PROJECT,
                         "inventories/prod.yaml": VARS + "secrets_file: .deployer/prod.env\n"
                                                  "hosts: {h1: {}}\n",
                         ".deployer/prod.env": "OTHER=x\n"})
    _, hint = hint_for(root, "prod")
    assert hint == (
        "export DB_PASSWORD=... in the environment, or add it to .deployer/prod.env, the "
        "secrets_file of inventories/prod.yaml: a dotenv file of secrets for this environment "
        "(KEY=VALUE lines; the environment wins over it)")


def test_the_sandbox_inventory_never_points_at_the_sandbox_internals(
        make_project: MakeProject) -> None:
    from deployer.sandbox import inventory
    from deployer.sandbox.model import SANDBOX_REL

    text = inventory.render(sandbox_rel=SANDBOX_REL, registry_server="10.213.0.2:5000",
                            registry_username="deployer", hosts=[("sandbox-1", "10.213.0.3")])
    root = make_project({"deployer.yaml": PROJECT, "inventories/sandbox.yaml": text + VARS,
                         f"{SANDBOX_REL}/registry.env":
                             f"{inventory.PASSWORD_VAR}=pw-sandbox-Long1\n"})
    _, hint = hint_for(root, "sandbox")
    assert hint.startswith("export DB_PASSWORD=... in the environment: ")
    assert "add it to" not in hint
    assert "belongs to `deployer sandbox`" in hint


def test_the_sandbox_folder_the_hint_knows_is_the_sandbox_s() -> None:
    from deployer.config.interpolate import SANDBOX_DIR
    from deployer.sandbox.model import SANDBOX_REL

    assert Path(SANDBOX_REL).parts == SANDBOX_DIR


def test_with_a_compose_env_file_the_hint_names_it_too(make_project: MakeProject) -> None:
    root = make_project({"deployer.yaml": PROJECT,
                         "inventories/prod.yaml": VARS + "secrets_file: .deployer/prod.env\n"
                                                  "hosts: {h1: {}}\n",
                         ".deployer/prod.env": "OTHER=x\n", ".env": "TAG=1\n"})
    _, hint = hint_for(root, "prod")
    assert hint.startswith("export DB_PASSWORD=... in the environment or in .env, or add it "
                           "to .deployer/prod.env, the secrets_file of inventories/prod.yaml")
