"""The command line's first five minutes: ``--version``, ``-C`` like
``git -C``, the global options after the command, and shell completion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from conftest import ENV, MakeProject

COMPOSE = """\
services:
  web:
    build: .
    image: shop-web
    ports: ["8000:8000"]
"""


def deployer(*args: str, cwd: Path, env: dict[str, str] | None = None,
             ) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if k not in ENV and k != "GITHUB_ACTIONS"}
    e.update(ENV)
    e.update(env or {})
    e["NO_COLOR"] = "1"
    return subprocess.run([sys.executable, "-m", "deployer", *args], capture_output=True,
                          text=True, env=e, cwd=cwd, timeout=60)


def test_version_prints_the_package_version(tmp_path: Path) -> None:
    p = deployer("--version", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout == f"deployer {version('deployer')}\n"
    assert p.stdout == "deployer 0.1.0\n"


# -- -C DIR resolves relative paths like git -C / make -C -------------------------


@pytest.mark.parametrize("args", [
    ("-C", "proj", "init", "--from-compose", "docker-compose.yml"),
    ("init", "--from-compose", "docker-compose.yml", "-C", "proj"),  # -C after the command
])
def test_init_from_compose_reads_the_file_relative_to_C(tmp_path: Path,
                                                        args: tuple[str, ...]) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "docker-compose.yml").write_text(COMPOSE)
    p = deployer(*args, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "{{ images.web }}" in (proj / "templates" / "docker-compose.yaml.j2").read_text()
    assert not (tmp_path / "deployer.yaml").exists()


def test_without_C_relative_paths_stay_relative_to_the_current_folder(tmp_path: Path) -> None:
    (tmp_path / "docker-compose.yml").write_text(COMPOSE)
    p = deployer("init", "--from-compose", "docker-compose.yml", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "{{ images.web }}" in (tmp_path / "templates" / "docker-compose.yaml.j2").read_text()


def test_a_compose_file_only_in_the_current_folder_is_not_found_with_C(tmp_path: Path) -> None:
    (tmp_path / "proj").mkdir()
    (tmp_path / "docker-compose.yml").write_text(COMPOSE)
    p = deployer("-C", "proj", "init", "--from-compose", "docker-compose.yml", cwd=tmp_path)
    assert p.returncode == 2
    assert str(tmp_path / "proj" / "docker-compose.yml") in p.stderr


def test_every_path_option_resolves_against_C() -> None:
    """Every command-line parameter typed Path (today: init --from-compose)
    goes through the same resolution: -C is the project folder, the rest are
    files given relative to it."""
    from typer.main import get_command

    from deployer.cli import main

    main._register()
    root = get_command(main.app)
    path_params = []

    def walk(cmd: object, prefix: str) -> None:
        for p in getattr(cmd, "params", []):
            # typer 0.29 keeps the Python annotation; older ones a click type
            kind = getattr(getattr(p, "type_descriptor", None), "annotation", None) or \
                getattr(p, "type", None)
            if "Path" in repr(kind) and p.name not in ("global_project_dir", "project_dir"):
                path_params.append(f"{prefix} {p.name}")
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{prefix} {name}".strip())

    walk(root, "")
    assert "init from_compose" in path_params
    # Each of these is resolved by the one wrapper every command has:
    for entry in path_params:
        cmd_name = entry.rsplit(" ", 1)[0]
        cmd = root
        for part in cmd_name.split():
            cmd = cmd.commands[part]  # type: ignore[attr-defined]
        assert any(p.name == "global_project_dir" for p in cmd.params), entry


# -- -o/-C/-v after the command ------------------------------------------------------


def test_output_json_after_the_command(make_project: MakeProject, tmp_path: Path) -> None:
    proj = make_project()
    p = deployer("check", "prod", "-o", "json", cwd=proj)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["hosts"] == 2
    p = deployer("check", "prod", "--output", "json", cwd=proj)
    assert json.loads(p.stdout)["ok"] is True


def test_project_dir_after_the_command(make_project: MakeProject, tmp_path: Path) -> None:
    proj = make_project()
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    elsewhere.mkdir()
    for args in (("plan", "prod", "-C", str(proj), "-o", "json"),
                 ("plan", "prod", "--project-dir", str(proj), "--output=json"),
                 ("-o", "json", "-C", str(proj), "plan", "prod")):
        p = deployer(*args, cwd=elsewhere)
        assert p.returncode == 0, (args, p.stderr)
        assert [h["name"] for h in json.loads(p.stdout)["hosts"]] == ["web-1", "web-2"]


def test_after_the_command_wins_over_before(make_project: MakeProject) -> None:
    proj = make_project()
    p = deployer("-o", "json", "check", "prod", "-o", "text", cwd=proj)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("ok: shop / prod")


def test_bad_output_after_the_command_is_a_usage_error(make_project: MakeProject) -> None:
    p = deployer("check", "prod", "-o", "xml", cwd=make_project())
    assert p.returncode == 2
    assert "must be text or json" in p.stderr
    assert "Traceback" not in p.stderr


def _unreachable_project(make_project: MakeProject, tmp_path: Path) -> Path:
    import paramiko

    key = tmp_path / "id_rsa"
    paramiko.RSAKey.generate(1024).write_private_key_file(str(key))
    # Port 1 on loopback: nothing listens, so the connection is refused at once.
    return make_project({"inventories/lo.yaml":
                         f"ssh: {{user: deploy, identity_file: {key}, port: 1}}\n"
                         "hosts: {lo-1: {address: 127.0.0.1}}\n"})


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_before_or_after_the_command(make_project: MakeProject, tmp_path: Path,
                                             where: str) -> None:
    proj = _unreachable_project(make_project, tmp_path)
    args = ["-v", "status", "lo"] if where == "before" else ["status", "lo", "-v"]
    p = deployer(*args, cwd=proj)
    assert p.returncode == 1, p.stderr
    assert "deployer.remote DEBUG lo-1: SSH connection failed" in p.stderr
    quiet = deployer("status", "lo", cwd=proj)
    assert quiet.returncode == 1
    assert "DEBUG" not in quiet.stderr


def test_ship_accepts_output_json_after_the_command(make_project: MakeProject,
                                                    tmp_path: Path) -> None:
    proj = _unreachable_project(make_project, tmp_path)
    (proj / "deployer.yaml").write_text(
        "app: shop\nfiles:\n  - {template: templates/docker-compose.yaml.j2, "
        "dest: docker-compose.yaml}\n")
    (proj / "templates" / "docker-compose.yaml.j2").write_text(
        "services:\n  web: {image: 'nginx:1'}\n")
    p = deployer("ship", "lo", "-o", "json", "--tag", "t1", cwd=proj)
    assert p.returncode == 1, p.stderr  # the host is unreachable, but the option parsed
    report = json.loads(p.stdout)
    assert report["command"] == "ship"
    assert report["hosts"][0]["result"] == "failed"


def test_options_after_dashdash_belong_to_the_remote_command() -> None:
    """``exec ENV SERVICE -- cmd -v -o x``: everything after ``--`` is the
    command's, not deployer's."""
    from typer.main import get_command

    from deployer.cli import main

    main._register()
    exec_cmd = get_command(main.app).commands["exec"]  # type: ignore[attr-defined]
    ctx = exec_cmd.make_context("exec", ["prod", "web", "-C", "d", "--", "ls", "-v",
                                         "-o", "x", "-C", "y"])
    assert ctx.params["command"] == ["ls", "-v", "-o", "x", "-C", "y"]
    assert ctx.params["global_verbose"] is False
    assert ctx.params["global_output"] is None
    assert str(ctx.params["global_project_dir"]) == "d"


# -- shell completion -----------------------------------------------------------------


def test_completion_bash_script_completes_command_names(tmp_path: Path) -> None:
    p = deployer("completion", "bash", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "complete -o default -F _deployer_completion deployer" in p.stdout
    # Use the script as bash would: `deployer` on PATH is this checkout.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shim = bindir / "deployer"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m deployer "$@"\n')
    shim.chmod(0o755)
    (tmp_path / "completion.bash").write_text(p.stdout)
    script = (
        "source completion.bash\n"
        "for words in 'deployer s' 'deployer ship prod --o' 'deployer sandbox d'; do\n"
        "  read -ra COMP_WORDS <<<\"$words\"; COMP_CWORD=$((${#COMP_WORDS[@]} - 1))\n"
        "  _deployer_completion deployer; echo \"$words: ${COMPREPLY[*]}\"\n"
        "done\n"
    )
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    r = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = dict(line.split(": ", 1) for line in r.stdout.splitlines())
    assert set(lines["deployer s"].split()) == {"schema", "ship", "status", "sandbox"}
    assert lines["deployer ship prod --o"].split() == ["--output"]
    assert lines["deployer sandbox d"].split() == ["down"]


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_completion_zsh_and_fish_scripts(tmp_path: Path, shell: str) -> None:
    p = deployer("completion", shell, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "_DEPLOYER_COMPLETE=complete_" + shell in p.stdout
    assert "deployer" in p.stdout


def test_completion_unknown_shell_is_a_usage_error(tmp_path: Path) -> None:
    p = deployer("completion", "tcsh", cwd=tmp_path)
    assert p.returncode == 2
    assert "bash, zsh, fish" in p.stderr
