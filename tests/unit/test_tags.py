"""project_tag against real git repositories in temporary directories."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from deployer.tags import TAG_RE, content_hash, is_valid_tag, project_tag

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "HOME": "/nonexistent",
}


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **GIT_ENV},
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "Dockerfile").write_text("FROM debian:bookworm\n")
    (root / "app.py").write_text("print('hi')\n")
    (root / ".gitignore").write_text("*.log\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    return root


def test_clean_repo_is_the_short_sha(repo: Path) -> None:
    sha = git(repo, "rev-parse", "HEAD")
    tag = project_tag(repo)
    assert tag == sha[:12]
    assert TAG_RE.fullmatch(tag)


def test_new_commit_changes_the_tag(repo: Path) -> None:
    first = project_tag(repo)
    (repo / "app.py").write_text("print('bye')\n")
    git(repo, "commit", "-qam", "two")
    second = project_tag(repo)
    assert second != first
    assert "dirty" not in second


def test_modified_tracked_file_is_dirty_and_stable(repo: Path) -> None:
    sha = project_tag(repo)
    (repo / "app.py").write_text("print('changed')\n")
    tag = project_tag(repo)
    assert re.fullmatch(rf"{sha}-dirty-[0-9a-f]{{12}}", tag)
    assert project_tag(repo) == tag  # unchanged dirty tree: same tag
    (repo / "app.py").write_text("print('changed again')\n")
    assert project_tag(repo) not in (tag, sha)
    (repo / "app.py").write_text("print('hi')\n")  # back to HEAD: clean again
    assert project_tag(repo) == sha


def test_untracked_file_is_dirty_and_its_content_counts(repo: Path) -> None:
    sha = project_tag(repo)
    (repo / "new.txt").write_text("a")
    a = project_tag(repo)
    assert a.startswith(f"{sha}-dirty-")
    (repo / "new.txt").write_text("b")
    b = project_tag(repo)
    assert b.startswith(f"{sha}-dirty-") and b != a


def test_ignored_and_state_files_do_not_make_it_dirty(repo: Path) -> None:
    sha = project_tag(repo)
    (repo / "debug.log").write_text("noise")
    (repo / ".deployer").mkdir()
    (repo / ".deployer" / "state.json").write_text("{}")
    (repo / "__pycache__").mkdir()
    (repo / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert project_tag(repo) == sha


def test_staged_change_is_dirty(repo: Path) -> None:
    sha = project_tag(repo)
    (repo / "app.py").unlink()
    git(repo, "add", "-A")
    assert project_tag(repo).startswith(f"{sha}-dirty-")


def test_subdirectory_project_ignores_changes_elsewhere(repo: Path) -> None:
    sub = repo / "svc"
    sub.mkdir()
    (sub / "Dockerfile").write_text("FROM debian:bookworm\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "svc")
    sha = project_tag(sub)
    (repo / "app.py").write_text("elsewhere\n")  # outside the project folder
    assert project_tag(sub) == sha
    (sub / "extra").write_text("inside\n")
    assert project_tag(sub).startswith(f"{sha}-dirty-")


def test_repo_without_commits_uses_content_hash(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "f").write_text("x")
    assert project_tag(tmp_path) == "c-" + content_hash(tmp_path)


def test_outside_git_content_hash(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("a")
    (root / "sub" / "b.txt").write_text("b")
    tag = project_tag(root)
    assert re.fullmatch(r"c-[0-9a-f]{12}", tag)
    assert project_tag(root) == tag  # deterministic

    # Skipped folders do not count.
    for skipped in (".git", ".deployer", "__pycache__", "sub/__pycache__"):
        (root / skipped).mkdir(exist_ok=True)
        (root / skipped / "junk").write_text("junk")
    assert project_tag(root) == tag

    # Content, names and the executable bit do.
    (root / "a.txt").write_text("A")
    changed = project_tag(root)
    assert changed != tag
    (root / "a.txt").write_text("a")
    assert project_tag(root) == tag
    (root / "sub" / "b.txt").rename(root / "sub" / "c.txt")
    assert project_tag(root) != tag
    (root / "sub" / "c.txt").rename(root / "sub" / "b.txt")
    (root / "a.txt").chmod(0o755)
    assert project_tag(root) != tag


def test_same_content_in_two_folders_same_tag(tmp_path: Path) -> None:
    for name in ("one", "two"):
        (tmp_path / name / "d").mkdir(parents=True)
        (tmp_path / name / "d" / "f").write_text("same")
        (tmp_path / name / "g").write_text("same too")
    assert project_tag(tmp_path / "one") == project_tag(tmp_path / "two")


def test_git_missing_falls_back_to_content_hash(
    tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert project_tag(repo) == "c-" + content_hash(repo)


@pytest.mark.parametrize(
    ("tag", "ok"),
    [("abc", True), ("v1.2_3-x", True), ("_a", True), ("-a", False), (".a", False),
     ("a" * 128, True), ("a" * 129, False), ("a:b", False), ("", False)],
)
def test_is_valid_tag(tag: str, ok: bool) -> None:
    assert is_valid_tag(tag) is ok
