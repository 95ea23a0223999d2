"""Hooks: the config, the local runner (a real subprocess) and the remote
command's exact argv and stdin (pure)."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest
from conftest import ENV, MakeProject

from deployer.config import load_project
from deployer.errors import ConfigError, DeployError
from deployer.hooks import configured, remote_command, run_local
from deployer.secrets import MASK, mask

DUMP = """\
#!{python}
import json, os, sys
print(json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd(),
                  "env": {{k: v for k, v in os.environ.items()}}}}))
sys.exit(int(os.environ.get("HOOK_EXIT", "0")))
"""


def with_hooks(make_project: MakeProject, hooks: str) -> Path:
    from conftest import BASIC_PROJECT

    root = make_project({"deployer.yaml": BASIC_PROJECT + hooks,
                         "scripts/dump": DUMP.format(python=sys.executable)})
    (root / "scripts/dump").chmod(0o755)
    return root


HOOKS = """\
hooks:
  pre_build: [./scripts/dump, a b, "$(touch x)"]
  post_up: [./scripts/smoke, --url, "http://localhost:8000/"]
  env: [SLACK_TOKEN]
"""


def test_hooks_load_in_run_order(make_project: MakeProject) -> None:
    p = load_project(with_hooks(make_project, HOOKS), "prod", {**ENV, "SLACK_TOKEN": "xoxb-Tok9"})
    assert configured(p) == [("pre_build", ["./scripts/dump", "a b", "$(touch x)"]),
                             ("post_up", ["./scripts/smoke", "--url", "http://localhost:8000/"])]
    assert p.hook_secrets == {"SLACK_TOKEN": "xoxb-Tok9"}
    assert mask("xoxb-Tok9") == MASK


@pytest.mark.parametrize(("hooks", "needle"), [
    ("hooks:\n  pre_build: ./scripts/check-branch\n", "never a shell string"),
    ("hooks:\n  post_up: []\n", "non-empty list"),
    ("hooks:\n  pre_up: [./x]\n  env: [NOPE_UNSET]\n", "hooks.env: NOPE_UNSET is not set"),
    ("hooks:\n  pre_up: [./x, '${DB_PASSWORD}']\n", "would put a secret on a command line"),
    ("hooks:\n  post_dploy: [./x]\n", "post_dploy"),
])
def test_bad_hooks(make_project: MakeProject, hooks: str, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_project(with_hooks(make_project, hooks), "prod", ENV)
    assert needle in str(e.value)
    assert "deployer.yaml:" in str(e.value)


def test_local_hook_env_has_no_secrets_but_hooks_env(make_project: MakeProject,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    root = with_hooks(make_project, HOOKS)
    p = load_project(root, "prod", {**ENV, "SLACK_TOKEN": "xoxb-Tok9"})
    monkeypatch.setenv("REGISTRY_PASSWORD", "reg-pass-Xy9")
    lines: list[str] = []
    run_local(p, "pre_build", "r1", ["web-1", "web-2"], lines.append)
    assert lines[0] == "hook pre_build: ./scripts/dump 'a b' '$(touch x)'"
    assert lines[1].startswith("hook pre_build | ")
    got = json.loads(lines[1].split(" | ", 1)[1])
    assert got["argv"] == ["a b", "$(touch x)"]  # as data: no shell
    assert Path(got["cwd"]) == root
    env = got["env"]
    assert {k: env[k] for k in env if k.startswith("DEPLOYER_")} == {
        "DEPLOYER_APP": "shop", "DEPLOYER_ENV": "prod", "DEPLOYER_RELEASE": "r1",
        "DEPLOYER_HOSTS": "web-1,web-2"}
    assert env["SLACK_TOKEN"] == "xoxb-Tok9"
    assert "REGISTRY_PASSWORD" not in env and "DB_PASSWORD" not in env
    assert not (root / "x").exists()


def test_local_hook_failure_names_it(make_project: MakeProject,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    p = load_project(with_hooks(make_project, HOOKS), "prod", {**ENV, "SLACK_TOKEN": "xoxb-Tok9"})
    monkeypatch.setattr("deployer.hooks.PASSTHROUGH", ("PATH", "HOOK_EXIT"))
    monkeypatch.setenv("HOOK_EXIT", "4")
    with pytest.raises(DeployError, match=r"hook pre_build `\./scripts/dump .*` failed \(exit 4\)"):
        run_local(p, "pre_build", "r1", ["web-1"], lambda _line: None)


def test_unset_local_hook_runs_nothing(make_project: MakeProject) -> None:
    p = load_project(with_hooks(make_project, HOOKS), "prod", {**ENV, "SLACK_TOKEN": "xoxb-Tok9"})
    lines: list[str] = []
    run_local(p, "post_deploy", "r1", ["web-1"], lines.append)
    assert lines == []


def test_remote_command_env_on_stdin_never_in_argv(make_project: MakeProject) -> None:
    p = load_project(with_hooks(make_project, HOOKS), "prod", {**ENV, "SLACK_TOKEN": "xo'xb-Tok9"})
    cmd = remote_command(p, "post_up", "/opt/shop/releases/r1", "r1", ["web-1", "web-2"], "web-2")
    assert cmd is not None
    assert cmd.argv == ("sh", "-c", 'eval "$(cat)"; exec "$@"', "hook-post_up",
                        "./scripts/smoke", "--url", "http://localhost:8000/")
    assert cmd.cwd == "/opt/shop/releases/r1" and not cmd.sudo
    assert cmd.stdin == (
        "export DEPLOYER_APP=shop\nexport DEPLOYER_ENV=prod\nexport DEPLOYER_RELEASE=r1\n"
        "export DEPLOYER_HOSTS=web-1,web-2\nexport DEPLOYER_HOST=web-2\n"
        f"export SLACK_TOKEN={shlex.quote(chr(120) + 'o' + chr(39) + 'xb-Tok9')}\n")
    assert "Tok9" not in cmd.shell()
    assert remote_command(p, "pre_up", "/d", "r1", ["web-1"], "web-1") is None
