"""`.ci/run` (CI's entry point) runs the README's commands in the README's
order: `bash .ci/demo`, its sandbox taken down, then `bash .ci/test`, then
ruff and mypy; with no stdin; and pytest's exit 5 (no tests) fails it.
Run against stand-in scripts in a copy of the repository layout."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

STUB = """#!/usr/bin/env bash
# stand-in: log the name, the args and whether stdin has anything
if [ -t 0 ]; then tty=tty; else tty=$(head -c1 | wc -c); fi
echo "$(basename "$0") $* stdin=$tty" >>"$CI_LOG"
exit "${RC:-0}"
"""


def fake_repo(tmp_path: Path, test_rc: int = 0) -> tuple[Path, Path, dict[str, str]]:
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy(ROOT / ".ci" / "run", repo / ".ci" / "run")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "log"
    for name, rc in (("demo", 0), ("test", test_rc)):
        (repo / ".ci" / name).write_text(STUB.replace("${RC:-0}", str(rc)))
    (bindir / "python3").write_text(STUB)
    (bindir / "python3").chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "CI_LOG": str(log),
           "CI": "true"}
    return repo, log, env


def run_ci(repo: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(repo / ".ci" / "run")], env=env, capture_output=True,
                          text=True, timeout=60, input="something on stdin\n")


def test_demo_first_then_the_suite_then_the_linters(tmp_path: Path) -> None:
    repo, log, env = fake_repo(tmp_path)
    p = run_ci(repo, env)
    assert p.returncode == 0, p.stderr
    assert log.read_text().splitlines() == [
        "demo  stdin=0",
        "python3 -m deployer -C examples/flask-postgres sandbox down stdin=0",
        "test -p no:cacheprovider stdin=0",
        "python3 -m ruff check deployer tests stdin=0",
        "python3 -m mypy deployer stdin=0",
        # the EXIT trap: safe twice
        "python3 -m deployer -C examples/flask-postgres sandbox down stdin=0",
    ]
    assert "ci: done in" in p.stdout


def test_no_tests_collected_fails_ci(tmp_path: Path) -> None:
    repo, log, env = fake_repo(tmp_path, test_rc=5)
    p = run_ci(repo, env)
    assert p.returncode == 1
    assert "pytest collected no tests" in p.stderr
    assert not any("ruff" in line for line in log.read_text().splitlines())


@pytest.mark.parametrize("rc", [1, 2])
def test_a_failing_suite_fails_ci_with_its_code(tmp_path: Path, rc: int) -> None:
    repo, log, env = fake_repo(tmp_path, test_rc=rc)
    p = run_ci(repo, env)
    assert p.returncode == rc
    assert "sandbox down" in log.read_text().splitlines()[-1]  # the demo's sandbox is gone


def test_a_failing_demo_stops_ci_and_takes_its_sandbox_down(tmp_path: Path) -> None:
    repo, log, env = fake_repo(tmp_path)
    (repo / ".ci" / "demo").write_text(STUB.replace("${RC:-0}", "1"))
    p = run_ci(repo, env)
    assert p.returncode == 1
    lines = log.read_text().splitlines()
    assert lines[0].startswith("demo")
    assert not any(line.startswith("test") for line in lines)
    assert "sandbox down" in lines[-1]
