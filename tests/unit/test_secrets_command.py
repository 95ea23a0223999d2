"""``secrets_command``: a real program (a script standing in for a manager,
and ``age`` decrypting a dotenv file) run by the config loader."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MakeProject

from deployer.config import load_project
from deployer.errors import ConfigError
from deployer.secrets import MASK, Secret, mask

# A stand-in for a secrets manager: prints dotenv (or what $MODE asks for)
# and counts its runs in calls.txt, next to itself.
MANAGER = """\
#!{python}
import os, sys
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "calls.txt"), "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
mode = os.environ.get("MODE", "ok")
if mode == "fail":
    print("DB_PASSWORD=half-printed-Pw77")
    sys.stderr.write("vault: permission denied for half-printed-Pw77\\n")
    sys.exit(3)
if mode == "json":
    print('{{"data": {{"data": {{"DB_PASSWORD": "vault-db-Pw55"}}, "metadata": {{}}}}}}')
    sys.exit(0)
print("# from the manager")
print("DB_PASSWORD=cmd-db-Pw11")
print("REGISTRY_PASSWORD='cmd-reg-Pw22'")
print("ONLY_CMD=cmd-only-Pw33")
"""

INVENTORY = """\
secrets_command: [./bin/manager, --env, prod]
secrets_file: .deployer/prod.env
vars: {pw: "${DB_PASSWORD}", only: "${ONLY_CMD}", file: "${ONLY_FILE}"}
hosts: {h1: {}}
"""


def project(make_project: MakeProject, inventory: str = INVENTORY) -> Path:
    root = make_project({
        "inventories/prod.yaml": inventory,
        ".deployer/prod.env": "DB_PASSWORD=file-db-Pw00\nONLY_FILE=file-only-Pw44\n"
                              "ONLY_CMD=file-loses-Pw66\n",
        "bin/manager": MANAGER.format(python=sys.executable),
    })
    (root / "bin/manager").chmod(0o755)
    return root


def calls(root: Path) -> list[str]:
    f = root / "bin/calls.txt"
    return f.read_text().splitlines() if f.exists() else []


def test_precedence_environment_command_file_and_one_run(make_project: MakeProject) -> None:
    root = project(make_project)
    p = load_project(root, "prod", {"DB_PASSWORD": "env-db-Pw99", "MODE": "ok"})
    v = p.hosts[0].vars
    assert v["pw"] == "env-db-Pw99"  # the environment wins
    assert v["only"] == "cmd-only-Pw33"  # the command beats the secrets_file
    assert v["file"] == "file-only-Pw44"  # the file still fills the rest
    assert p.registry.password == "cmd-reg-Pw22"
    assert isinstance(v["only"], Secret) and isinstance(p.registry.password, Secret)
    assert calls(root) == ["--env prod"]  # once, with its argv as written
    assert mask("x cmd-only-Pw33 cmd-reg-Pw22") == f"x {MASK} {MASK}"


def test_not_run_when_the_environment_has_every_variable(make_project: MakeProject) -> None:
    root = project(make_project)
    env = {"DB_PASSWORD": "env-db-Pw99", "ONLY_CMD": "env-only-Pw98",
           "ONLY_FILE": "env-file-Pw97", "REGISTRY_PASSWORD": "env-reg-Pw96"}
    p = load_project(root, "prod", env)
    assert p.hosts[0].vars["only"] == "env-only-Pw98"
    assert calls(root) == []


def test_every_value_it_prints_is_masked_even_unused(make_project: MakeProject) -> None:
    inv = INVENTORY.replace('"${DB_PASSWORD}"', "plain")
    root = project(make_project, inv)
    load_project(root, "prod", {"MODE": "ok"})
    assert mask("db is cmd-db-Pw11") == f"db is {MASK}"


def test_failure_is_a_config_error_with_masked_stderr(make_project: MakeProject) -> None:
    root = project(make_project)
    with pytest.raises(ConfigError) as e:
        load_project(root, "prod", {"MODE": "fail"})
    msg = str(e.value)
    assert "inventories/prod.yaml:1:" in msg
    assert "secrets_command `./bin/manager --env prod` failed (exit 3)" in msg
    assert f"vault: permission denied for {MASK}" in msg
    assert "half-printed" not in msg
    assert e.value.exit_code == 2


def test_vault_json_output(make_project: MakeProject) -> None:
    root = project(make_project)
    p = load_project(root, "prod", {"MODE": "json", "ONLY_CMD": "env-only-Pw98",
                                        "REGISTRY_PASSWORD": "env-reg-Pw96"})
    assert p.hosts[0].vars["pw"] == "vault-db-Pw55"


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ('"sops -d secrets/prod.env"', "must be a list (an argv), not a shell string"),
        ("[]", "must be a non-empty list of strings"),
        ("[./bin/nope]", "./bin/nope not found"),
    ],
)
def test_bad_commands(make_project: MakeProject, value: str, needle: str) -> None:
    inv = INVENTORY.replace("[./bin/manager, --env, prod]", value)
    root = project(make_project, inv)
    with pytest.raises(ConfigError, match="secrets_command") as e:
        load_project(root, "prod", {})
    assert needle in str(e.value)


def test_never_through_a_shell(make_project: MakeProject, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    inv = INVENTORY.replace("[./bin/manager, --env, prod]",
                            f'[./bin/manager, "; touch {marker}", "$(touch {marker})"]')
    root = project(make_project, inv)
    load_project(root, "prod", {})
    assert not marker.exists()
    assert calls(root) == [f"; touch {marker} $(touch {marker})"]


def test_cli_failure_exit_2_without_traceback(make_project: MakeProject) -> None:
    root = project(make_project)
    env = {k: v for k, v in os.environ.items() if "PASSWORD" not in k}
    env["MODE"] = "fail"
    p = subprocess.run([sys.executable, "-m", "deployer", "-C", str(root), "check", "prod"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    assert "secrets_command `./bin/manager --env prod` failed (exit 3)" in p.stderr
    assert "half-printed-Pw77" not in p.stderr + p.stdout


@pytest.mark.skipif(shutil.which("age") is None, reason="age is not installed")
def test_age_decrypts_a_dotenv_file(make_project: MakeProject) -> None:
    """A real encryption tool as the manager: ``age -d -i key file``."""
    root = project(make_project, INVENTORY.replace(
        "[./bin/manager, --env, prod]", "[age, -d, -i, .deployer/age.key, secrets/prod.env.age]"))
    subprocess.run(["age-keygen", "-o", str(root / ".deployer/age.key")], check=True,
                   capture_output=True)
    pub = subprocess.run(["age-keygen", "-y", str(root / ".deployer/age.key")], check=True,
                         capture_output=True, text=True).stdout.strip()
    (root / "secrets").mkdir()
    subprocess.run(["age", "-r", pub, "-o", str(root / "secrets/prod.env.age")],
                   input=b"ONLY_CMD=age-only-Pw12\nREGISTRY_PASSWORD=age-reg-Pw13\n",
                   check=True)
    p = load_project(root, "prod", {"DB_PASSWORD": "env-db-Pw99"})
    assert p.hosts[0].vars["only"] == "age-only-Pw12"
    assert p.registry.password == "age-reg-Pw13"
    assert mask("age-reg-Pw13") == MASK
