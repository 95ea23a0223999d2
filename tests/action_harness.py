"""Runs the ``run:`` steps of ``action.yml`` the way the GitHub runner does,
in a temporary "runner", so tests exercise the action's real scripts.

What it mimics (and only that): each step runs as
``bash --noprofile --norc -eo pipefail SCRIPT`` (the runner's ``shell: bash``)
in the workspace, with the step's ``env:`` after replacing the expressions the
action uses (``${{ inputs.NAME }}`` with the given input or its default,
``${{ github.action_path }}`` with this repository); the ``GITHUB_ENV``,
``GITHUB_PATH``, ``GITHUB_OUTPUT`` and ``GITHUB_STEP_SUMMARY`` files live in
the runner folder, and what a step appends to ``GITHUB_ENV``/``GITHUB_PATH``
reaches the following steps. An expression it does not know is an error, so
a new one in action.yml needs a decision here. ``uses:`` steps are not run.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
ACTION = ROOT / "action.yml"
EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
BASH = ["bash", "--noprofile", "--norc", "-eo", "pipefail"]


def load_action(path: Path = ACTION) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def parse_env_file(text: str) -> dict[str, str]:
    """``NAME=value`` lines and ``NAME<<DELIM`` ... ``DELIM`` blocks (the
    format of GITHUB_ENV and GITHUB_OUTPUT)."""
    out: dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line:
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delim = line.split("<<", 1)
            value: list[str] = []
            while i < len(lines) and lines[i] != delim:
                value.append(lines[i])
                i += 1
            if i >= len(lines):
                raise ValueError(f"no closing {delim!r} for {name}")
            i += 1
            out[name] = "\n".join(value)
        else:
            name, _, val = line.partition("=")
            out[name] = val
    return out


@dataclass
class StepRun:
    name: str
    returncode: int
    stdout: str
    stderr: str
    outputs: dict[str, str]


@dataclass
class Runner:
    """A temporary runner: ``root`` holds home/, temp/, workspace/ and the
    GITHUB_* files; ``base_env`` is the environment every step starts from."""

    root: Path
    inputs: dict[str, str] = field(default_factory=dict)
    base_env: dict[str, str] = field(default_factory=dict)
    action: dict[str, Any] = field(default_factory=load_action)
    exported: dict[str, str] = field(default_factory=dict)
    path_prepend: list[str] = field(default_factory=list)
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for d in ("home", "temp", "workspace", "files"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        self.summary = self.root / "files" / "step_summary.md"
        self.summary.touch()

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def workspace(self) -> Path:
        return self.root / "workspace"

    def input(self, name: str) -> str:
        spec = self.action["inputs"].get(name)
        if spec is None:
            raise KeyError(f"action.yml has no input {name!r}")
        return self.inputs.get(name, str(spec.get("default", "")))

    def expand(self, text: str) -> str:
        def one(m: re.Match[str]) -> str:
            expr = m.group(1)
            if expr.startswith("inputs."):
                return self.input(expr.removeprefix("inputs."))
            if expr == "github.action_path":
                return str(ROOT)
            raise ValueError(f"the harness does not know the expression {expr!r}")

        return EXPR.sub(one, text)

    def steps(self) -> list[dict[str, Any]]:
        steps = self.action["runs"]["steps"]
        assert isinstance(steps, list)
        return steps

    def step(self, name_or_id: str) -> dict[str, Any]:
        for s in self.steps():
            if name_or_id in (s.get("id"), s.get("name")):
                return s
        raise KeyError(name_or_id)

    def run(self, name_or_id: str, timeout: float = 900, extra_env: dict[str, str] | None = None,
            merge_stderr: bool = False) -> StepRun:
        """Run one ``run:`` step; its GITHUB_OUTPUT is fresh, as on the runner.
        ``merge_stderr``: one stream in ``stdout``, in the order written (as
        the runner's log shows it)."""
        s = self.step(name_or_id)
        if "run" not in s:
            raise ValueError(f"step {name_or_id!r} is not a run: step")
        assert s.get("shell") == "bash", "every run: step of a composite action needs shell: bash"
        n = len(self.outputs)
        files = self.root / "files"
        out_file, env_file, path_file = (files / f"{k}_{n}" for k in ("output", "env", "path"))
        for f in (out_file, env_file, path_file):
            f.write_text("")
        env = {
            **self.base_env,
            "HOME": str(self.home),
            "RUNNER_TEMP": str(self.root / "temp"),
            "GITHUB_WORKSPACE": str(self.workspace),
            "GITHUB_ACTIONS": "true",
            "CI": "true",
            "GITHUB_ACTION_PATH": str(ROOT),
            "GITHUB_OUTPUT": str(out_file),
            "GITHUB_ENV": str(env_file),
            "GITHUB_PATH": str(path_file),
            "GITHUB_STEP_SUMMARY": str(self.summary),
            **self.exported,
        }
        env["PATH"] = os.pathsep.join([*self.path_prepend, env.get("PATH", os.defpath)])
        for k, v in (s.get("env") or {}).items():
            env[k] = self.expand(str(v))
        env.update(extra_env or {})
        script = files / f"step_{n}.sh"
        script.write_text(s["run"])
        p = subprocess.run([*BASH, str(script)], cwd=self.workspace, env=env, text=True,
                           stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        self.exported.update(parse_env_file(env_file.read_text()))
        self.path_prepend[:0] = [ln for ln in path_file.read_text().splitlines() if ln][::-1]
        outputs = parse_env_file(out_file.read_text())
        self.outputs[s.get("id") or s.get("name") or str(n)] = outputs
        return StepRun(s.get("name", ""), p.returncode, p.stdout, p.stderr or "", outputs)

    def action_outputs(self) -> dict[str, str]:
        """The action's ``outputs:`` resolved from the steps run so far."""
        out = {}
        for name, spec in self.action.get("outputs", {}).items():
            m = re.fullmatch(r"\$\{\{\s*steps\.([\w-]+)\.outputs\.([\w-]+)\s*\}\}", spec["value"])
            assert m, f"output {name}: {spec['value']!r} is not steps.ID.outputs.NAME"
            out[name] = self.outputs.get(m.group(1), {}).get(m.group(2), "")
        return out
