"""The command line as users meet it: exit codes, one-line errors, no
tracebacks, secrets masked; ``plan`` on the example; ``init``; ``schema``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ENV, MakeProject

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "flask-postgres"


def deployer(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    e = {k: v for k, v in os.environ.items() if k not in ENV and k != "GITHUB_ACTIONS"}
    e.update(env if env is not None else ENV)
    e["NO_COLOR"] = "1"
    return subprocess.run([sys.executable, "-m", "deployer", *args], capture_output=True,
                          text=True, env=e, cwd=cwd, timeout=60)


def assert_config_error(p: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert p.returncode == 2, p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    assert p.stderr.startswith("error: ")
    for n in needles:
        assert n in p.stderr, p.stderr


def test_check_ok(make_project: MakeProject) -> None:
    p = deployer("-C", str(make_project()), "check", "prod")
    assert p.returncode == 0, p.stderr
    assert "ok: shop / prod: 2 hosts, 4 files rendered, 1 images" in p.stdout


@pytest.mark.parametrize(
    ("files", "args", "needles"),
    [
        ({"inventories/prod.yaml": "groups: [\n"}, ("check", "prod"),
         ("inventories/prod.yaml:2:1", "YAML syntax error")),
        ({"inventories/prod.yaml": "hosts: {h: {adress: x}}\n"}, ("check", "prod"),
         ("did you mean 'address'",)),
        ({"inventories/prod.yaml": "ssh: {port: x}\nhosts: {h: {}}\n"}, ("check", "prod"),
         ("ssh.port",)),
        ({}, ("check", "staging"), ("unknown environment 'staging'", "environments here: prod")),
        ({}, ("plan", "prod", "--limit", "db-*"), ("'db-*' matches no host or group",)),
        ({"templates/app.conf.j2": "{{ nope }}\n"}, ("check", "prod"),
         ("templates/app.conf.j2:1: undefined variable nope (host web-1)",)),
        ({"templates/app.conf.j2": "{% for %}\n"}, ("check", "prod"),
         ("templates/app.conf.j2:1: template syntax error",)),
        ({"inventories/prod.yaml": "groups:\n  a: {hosts: {h: {}}}\n  b: {hosts: {h: {}}}\n"},
         ("check", "prod"), ("host 'h' is defined twice",)),
        ({"deployer.yaml": "app: shop\nfiles: [{template: t, dest: ../x}]\n"}, ("check", "prod"),
         ("escapes the release directory",)),
    ],
)
def test_bad_input_exits_2_with_one_clear_message(
    make_project: MakeProject, files: dict[str, str], args: tuple[str, ...],
    needles: tuple[str, ...],
) -> None:
    assert_config_error(deployer("-C", str(make_project(files)), *args), *needles)


def test_missing_variable_is_named(make_project: MakeProject) -> None:
    p = deployer("-C", str(make_project()), "check", "prod", env={"DB_PASSWORD": "x"})
    assert_config_error(p, "REGISTRY_PASSWORD is not set")


def test_usage_error_exits_2(make_project: MakeProject) -> None:
    p = deployer("-C", str(make_project()), "plan")
    assert p.returncode == 2
    assert "Traceback" not in p.stderr


def test_no_project_here(tmp_path: Path) -> None:
    assert_config_error(deployer("-C", str(tmp_path), "check", "prod"), "no deployer.yaml here")


def test_plan_masks_secrets_and_shows_steps(make_project: MakeProject) -> None:
    p = deployer("-C", str(make_project()), "plan", "prod")
    assert p.returncode == 0, p.stderr
    out = p.stdout + p.stderr
    assert ENV["DB_PASSWORD"] not in out and ENV["REGISTRY_PASSWORD"] not in out
    assert "password=******" in p.stdout
    assert "--password-stdin  <<< ******" in p.stdout
    assert "docker compose -p shop -f docker-compose.yaml up -d --remove-orphans" in p.stdout


def test_plan_json(make_project: MakeProject) -> None:
    p = deployer("-C", str(make_project()), "-o", "json", "plan", "prod", "--limit", "web-2")
    data = json.loads(p.stdout)
    assert [h["name"] for h in data["hosts"]] == ["web-2"]
    steps = [s["step"] for s in data["hosts"][0]["steps"]]
    assert "compose up" in steps and "switch current" in steps
    assert ENV["DB_PASSWORD"] not in p.stdout


def test_plan_on_the_example_prints_server_compose_for_two_hosts() -> None:
    p = deployer("-C", str(EXAMPLE), "-o", "json", "plan", "prod", "--tag", "t1",
                 env={"REGISTRY_PASSWORD": "r-pw-123", "DB_PASSWORD": "d-pw-456"})
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert [h["name"] for h in data["hosts"]] == ["web-1", "web-2"]
    for h in data["hosts"]:
        files = {f["dest"]: f for f in h["files"]}
        compose = yaml.safe_load(files["docker-compose.yaml"]["content"])
        svc = compose["services"]
        assert set(svc) == {"db", "migrate", "web"}
        assert svc["web"]["image"] == "registry.example.com:5000/flaskpg/web:t1"
        assert svc["db"]["image"] == "registry.example.com:5000/flaskpg/postgres:t1"
        assert svc["web"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert svc["web"]["depends_on"]["db"]["condition"] == "service_healthy"
        assert svc["db"]["healthcheck"]["test"][1] == "pg_isready"
        assert "./docker_config.py:/app/docker_config.py:ro" in svc["web"]["volumes"]
        assert "build" not in svc["web"]
        assert files["docker_config.py"]["mode"] == "0600"
        assert "d-pw-456" not in files["docker_config.py"]["content"]  # masked in output
        assert "_db_password = \"******\"" in files["docker_config.py"]["content"]
    web2 = {f["dest"]: f for f in data["hosts"][1]["files"]}["docker_config.py"]["content"]
    assert 'GREETING = "Hello from the second server"' in web2


def test_init_scaffolds_then_refuses_to_overwrite(tmp_path: Path) -> None:
    p = deployer("-C", str(tmp_path), "init")
    assert p.returncode == 0, p.stderr
    for rel in ("deployer.yaml", "inventories/prod.yaml", "templates/docker-compose.yaml.j2"):
        assert (tmp_path / rel).is_file()
    again = deployer("-C", str(tmp_path), "init")
    assert_config_error(again, "deployer.yaml")
    assert deployer("-C", str(tmp_path), "init", "--force").returncode == 0


def test_schema_is_json_schema() -> None:
    p = deployer("schema", "inventory")
    data = json.loads(p.stdout)
    assert "rollout" in data["properties"]
    assert data["additionalProperties"] is False
