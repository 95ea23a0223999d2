"""action.yml and the example workflow: valid by GitHub's schemas (SchemaStore;
actionlint cannot be installed here), no ``${{ }}`` inside a script, and each
``run:`` step executed for real by tests/action_harness.py, so the action
cannot drift from the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from action_harness import EXPR, ROOT, Runner, load_action
from conftest import copy_tracked

SCHEMAS = ROOT / "tests" / "data" / "schemastore"
WORKFLOW = ROOT / "examples" / "github-actions" / "deploy.yml"
EXAMPLE = ROOT / "examples" / "flask-postgres"
REG_PW = "reg-Pass-action-1"
DB_PW = "db-Pass-action-2"
BIN = str(Path(sys.executable).parent)  # where the editable install's `deployer` is


def validate(doc_path: Path, schema_name: str) -> None:
    import jsonschema

    schema = json.loads((SCHEMAS / schema_name).read_text())
    doc = yaml.safe_load(doc_path.read_text())
    # YAML 1.1 reads a bare `on:` as True; GitHub reads it as the key "on".
    if isinstance(doc, dict) and True in doc:
        doc["on"] = doc.pop(True)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_action_matches_the_schema() -> None:
    validate(ROOT / "action.yml", "github-action.json")


def test_example_workflow_matches_the_schema() -> None:
    validate(WORKFLOW, "github-workflow.json")


def test_schema_check_catches_mistakes(tmp_path: Path) -> None:
    bad = tmp_path / "action.yml"
    action = load_action()
    action["runs"]["steps"][1].pop("shell")  # composite run steps need a shell
    bad.write_text(yaml.safe_dump(action))
    with pytest.raises(AssertionError):
        validate(bad, "github-action.json")


def test_no_expression_inside_any_script() -> None:
    for step in load_action()["runs"]["steps"]:
        if "run" in step:
            assert "${{" not in step["run"], f"step {step.get('name')}: use env:, not ${{{{ }}}}"
    for job in yaml.safe_load(WORKFLOW.read_text())["jobs"].values():
        for step in job["steps"]:
            assert "${{" not in step.get("run", ""), step


def test_inputs_reach_scripts_only_through_env() -> None:
    action = load_action()
    used: set[str] = set()
    for step in action["runs"]["steps"]:
        for value in (step.get("env") or {}).values():
            for expr in EXPR.findall(str(value)):
                assert expr.startswith("inputs.") or expr == "github.action_path", expr
                used.add(expr.removeprefix("inputs."))
        for value in (step.get("with") or {}).values():
            used.update(e.removeprefix("inputs.") for e in EXPR.findall(str(value)))
    assert used >= set(action["inputs"]), f"inputs no step uses: {set(action['inputs']) - used}"
    assert action["inputs"]["known-hosts"]["required"] is True
    assert action["inputs"]["command"]["default"] == "ship"
    assert set(action["outputs"]) == {"release", "result"}
    uses = [s["uses"] for s in action["runs"]["steps"] if "uses" in s]
    assert uses == ["actions/setup-python@v5"]


def test_example_workflow_serialises_deploys_and_uses_an_environment() -> None:
    wf = yaml.safe_load(WORKFLOW.read_text())
    assert wf[True]["push"]["branches"] == ["main"]
    job = wf["jobs"]["deploy"]
    assert job["environment"] == "production"
    assert job["concurrency"] == {"group": "deploy-production", "cancel-in-progress": False}
    ship = next(s for s in job["steps"] if s.get("id") == "ship")
    assert ship["uses"] == "./"
    assert set(ship["with"]) <= set(load_action()["inputs"])
    assert {"environment", "ssh-private-key", "known-hosts"} <= set(ship["with"])


# -- the run: steps, executed ---------------------------------------------------


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[Runner]:
    r = Runner(tmp_path / "runner", base_env={"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"})
    yield r
    pid = r.exported.get("SSH_AGENT_PID")
    if pid:  # the agent the SSH step started
        os.kill(int(pid), signal.SIGTERM)


def make_key(tmp_path: Path) -> tuple[str, str]:
    """(OpenSSH private key text, its SHA256 fingerprint)."""
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ci", "-f", str(key)],
                   check=True)
    fp = subprocess.run(["ssh-keygen", "-lf", str(key)], capture_output=True, text=True,
                        check=True).stdout.split()[1]
    return key.read_text(), fp


KNOWN = ("[10.0.0.5]:22 ssh-ed25519 "
         "AAAAC3NzaC1lZDI1NTE5AAAAIJ6n5mB4b9F1kQ9mG3k2v5n8b2Y7a1c3d4e5f6g7h8i9")


def test_ssh_step_loads_the_key_into_an_agent(runner: Runner, tmp_path: Path) -> None:
    key, fp = make_key(tmp_path)
    (runner.home / ".ssh").mkdir()
    (runner.home / ".ssh" / "known_hosts").write_text("old.example ssh-ed25519 AAAAold")
    runner.inputs = {"ssh-private-key": key.replace("\n", "\r\n"),
                     "known-hosts": f"{KNOWN}\r\n\r\n"}
    r = runner.run("SSH key and known hosts")
    assert r.returncode == 0, r.stderr
    kh = runner.home / ".ssh" / "known_hosts"
    assert kh.read_text() == f"old.example ssh-ed25519 AAAAold\n{KNOWN}\n"  # appended, no \r
    assert oct((runner.home / ".ssh").stat().st_mode & 0o777) == "0o700"
    sock = runner.exported["SSH_AUTH_SOCK"]
    assert runner.exported["SSH_AGENT_PID"].isdigit()
    listed = subprocess.run(["ssh-add", "-l"], env={**os.environ, "SSH_AUTH_SOCK": sock},
                            capture_output=True, text=True)
    assert fp in listed.stdout
    # the key file that fed the agent is gone; nothing under ~/.ssh but known_hosts
    assert list((runner.root / "temp").iterdir()) == []
    assert [p.name for p in (runner.home / ".ssh").iterdir()] == ["known_hosts"]
    assert key.splitlines()[1] not in r.stdout + r.stderr


def test_ssh_step_refuses_without_known_hosts(runner: Runner, tmp_path: Path) -> None:
    runner.inputs = {"ssh-private-key": make_key(tmp_path)[0], "known-hosts": "  \n"}
    r = runner.run("SSH key and known hosts")
    assert r.returncode == 1
    assert r.stdout.startswith("::error title=deployer::the known-hosts input is required")
    assert "SSH_AUTH_SOCK" not in runner.exported


def test_ssh_step_rejects_a_bad_key_and_leaves_nothing(runner: Runner) -> None:
    runner.inputs = {"ssh-private-key": "not a key", "known-hosts": KNOWN}
    r = runner.run("SSH key and known hosts")
    assert r.returncode == 1
    assert "::error title=deployer::ssh-private-key could not be loaded" in r.stdout
    assert list((runner.root / "temp").iterdir()) == []
    assert "SSH_AUTH_SOCK" not in runner.exported


def test_ssh_step_without_a_key_only_writes_known_hosts(runner: Runner) -> None:
    runner.inputs = {"known-hosts": KNOWN}
    r = runner.run("SSH key and known hosts")
    assert r.returncode == 0, r.stderr
    assert (runner.home / ".ssh" / "known_hosts").read_text() == KNOWN + "\n"
    assert runner.exported == {}


def test_install_step_installs_this_checkout(runner: Runner, tmp_path: Path) -> None:
    # A venv that sees the dependencies already installed (no downloads but
    # the build backend), standing in for setup-python's interpreter.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    runner.base_env["PATH"] = f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"
    r = runner.run("Install deployer", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (venv / "bin" / "deployer").is_file()
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import deployer.report.github as g; print(g.__file__)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert where.startswith(str(venv))


def project(runner: Runner) -> None:
    copy_tracked(EXAMPLE, runner.workspace / "app")


def test_deploy_step_runs_the_cli_with_masks_and_outputs(runner: Runner) -> None:
    project(runner)
    runner.base_env["DB_PASSWORD"] = DB_PW
    runner.inputs = {"environment": "prod", "command": "check", "working-directory": "app",
                     "registry-password": REG_PW}
    r = runner.run("deploy")
    assert r.returncode == 0, r.stdout + r.stderr
    # The masks go to stderr (the runner reads workflow commands from both
    # streams), first, so stdout stays clean for `-o json`.
    err_lines = r.stderr.splitlines()
    assert sorted(err_lines[:2]) == sorted([f"::add-mask::{REG_PW}", f"::add-mask::{DB_PW}"])
    assert "::add-mask::" not in r.stdout
    rest = r.stdout + "\n".join(err_lines[2:])
    assert "ok: flaskpg / prod: 2 hosts" in rest
    assert REG_PW not in rest and DB_PW not in rest
    assert r.outputs == {"result": "success", "release": ""}
    assert runner.action_outputs() == {"result": "success", "release": ""}


def test_deploy_step_splits_args_but_never_evaluates_them(runner: Runner) -> None:
    project(runner)
    runner.base_env["DB_PASSWORD"] = DB_PW
    runner.inputs = {"environment": "prod", "command": "plan", "working-directory": "app",
                     "registry-password": REG_PW, "args": "--limit web-1\n  --no-files"}
    r = runner.run("deploy")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "== web-1" in r.stdout and "== web-2" not in r.stdout

    evil = '$(touch pwned) ; `touch pwned2` * "quoted words" | touch pwned3'
    runner.inputs["args"] = evil
    r = runner.run("deploy")
    assert r.returncode == 2
    assert "unexpected extra argument" in r.stderr
    assert '($(touch pwned) ; `touch pwned2` * "quoted words" | touch pwned3)' in r.stderr
    assert not list(runner.workspace.glob("pwned*"))
    assert r.outputs == {"result": "failure", "release": ""}


def test_deploy_step_reports_input_errors_as_annotations(runner: Runner) -> None:
    project(runner)
    runner.inputs = {"environment": "staging", "working-directory": "app"}
    r = runner.run("deploy")
    assert r.returncode == 2
    assert "::error title=deployer::unknown environment 'staging'" in r.stderr
    assert runner.action_outputs() == {"result": "failure", "release": ""}
