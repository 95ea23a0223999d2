"""Tests copy an example as a fresh clone has it: the git-ignored files a
`bash .ci/demo` leaves there (inventories/sandbox.yaml, .deployer/) stay
behind, so `.ci/demo` then `.ci/test` works."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import copy_tracked

ROOT = Path(__file__).resolve().parents[2]


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_copies_tracked_files_only(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    ex = repo / "examples" / "app"
    (ex / "inventories").mkdir(parents=True)
    (ex / "templates").mkdir()
    (ex / "deployer.yaml").write_text("app: x\n")
    (ex / "inventories" / "prod.yaml").write_text("hosts: {}\n")
    (ex / "templates" / "c.j2").write_text("t\n")
    (ex / "run.sh").write_text("#!/bin/sh\n")
    (ex / "run.sh").chmod(0o755)
    (ex / ".gitignore").write_text("inventories/sandbox.yaml\n.deployer/\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    # What the demo leaves behind, and a file nobody added:
    (ex / "inventories" / "sandbox.yaml").write_text("vars: {a: 1}\n")
    (ex / ".deployer" / "sandbox").mkdir(parents=True)
    (ex / ".deployer" / "sandbox" / "id_ed25519").write_text("key\n")
    (ex / "stray.txt").write_text("untracked\n")
    # A tracked file deleted in the work tree is simply not there.
    (ex / "templates" / "gone.j2").write_text("x\n")
    git(ex, "add", "templates/gone.j2")
    (ex / "templates" / "gone.j2").unlink()

    dest = copy_tracked(ex, tmp_path / "copy")
    got = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert got == [".gitignore", "deployer.yaml", "inventories/prod.yaml", "run.sh",
                   "templates/c.j2"]
    assert (dest / "run.sh").stat().st_mode & 0o111  # modes kept


def test_the_real_example_copies_without_ignored_files(tmp_path: Path) -> None:
    ex = ROOT / "examples" / "flask-postgres"
    dest = copy_tracked(ex, tmp_path / "fp")
    assert (dest / "deployer.yaml").is_file()
    assert (dest / "templates" / "docker-compose.yaml.j2").is_file()
    assert not (dest / "inventories" / "sandbox.yaml").exists()
    assert not (dest / ".deployer").exists()
