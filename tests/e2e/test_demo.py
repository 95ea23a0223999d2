"""The README's first command, `.ci/demo`, runs the main job on the sandbox:
fresh hosts, build and push, bootstrap, ship, and the app answers."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from conftest import copy_tracked

from e2e.helpers import deployer_env

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def run_demo(env: dict[str, str]) -> str:
    """`bash .ci/demo` as the README gives it: its output, once it worked and
    both hosts answered."""
    t0 = time.monotonic()
    p = subprocess.run(["bash", str(ROOT / ".ci" / "demo")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=1500, stdin=subprocess.DEVNULL)
    print(f".ci/demo took {time.monotonic() - t0:.0f}s")  # what it costs .ci/run (-rP)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-4000:]
    assert out.count('"greeting":"Hello from the sandbox"') == 2  # both hosts answered
    return out


def test_readme_demo_command_ships_the_example(tmp_path: Path) -> None:
    from deployer.sandbox import manager

    readme = (ROOT / "README.md").read_text()
    assert "bash .ci/demo" in readme  # the command the README gives first
    project = tmp_path / "flask-postgres"
    copy_tracked(ROOT / "examples" / "flask-postgres", project)
    env = deployer_env({"DEMO_SKIP_SETUP": "1", "DEMO_PROJECT": str(project)})
    try:
        out = run_demo(env)
        assert "success: 2 deployed" in out
        assert out.count("PostgreSQL") >= 2
        password = (project / ".deployer" / "demo.env").read_text().split("=", 1)[1].strip()
        assert password not in out
        # Re-runnable: the sandbox is completed, the inventory keeps the demo's
        # vars (once), and the ship has nothing to do.
        again = run_demo(env)
        assert "success: 2 unchanged" in again
        inventory = (project / "inventories" / "sandbox.yaml").read_text()
        assert inventory.count("\nvars:") == 1
        assert password not in again
    finally:
        manager.down(project)
