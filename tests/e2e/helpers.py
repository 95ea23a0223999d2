"""What the e2e test files share when they drive deployer the way a user
does: as a ``python -m deployer -C PROJECT ...`` subprocess (so it picks up
PYTHONPATH, i.e. the checkout under test), and its JSON report.

Fault injectors live in :mod:`e2e.faults`, fixtures in ``conftest.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def deployer_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a deployer subprocess: this process's, plus
    ``extra``, with plain progress lines (``NO_COLOR``) and no GitHub Actions
    annotations, whatever the CI runner sets."""
    env = {**os.environ, **(extra or {}), "NO_COLOR": "1"}
    env.pop("GITHUB_ACTIONS", None)
    return env


def deployer_argv(root: Path, *args: str) -> list[str]:
    """``python -m deployer -C root args...``."""
    return [sys.executable, "-m", "deployer", "-C", str(root), *args]


def run_deployer(root: Path, *args: str, env: Mapping[str, str], check: int | None = 0,
                 timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run deployer on the project at ``root``; with ``check`` (an exit
    code), assert it exited so, showing its output when not."""
    p = subprocess.run(deployer_argv(root, *args), capture_output=True, text=True,
                       env=dict(env), timeout=timeout)
    if check is not None:
        assert p.returncode == check, f"exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


def results(report: dict[str, Any]) -> dict[str, str]:
    """A ship/rollback JSON report's result per host: ``{host: "deployed"}``."""
    return {h["host"]: h["result"] for h in report["hosts"]}
