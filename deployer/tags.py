"""The release tag: which bytes a ship builds, named so that it never moves.

Tags are immutable (nothing is pushed as ``latest``), so the tag must change
whenever the source does and stay put when it does not:

* in git, the short commit sha; a tree with uncommitted changes (tracked edits
  or untracked files) gets ``-dirty-<hash of those changes>``, so two different
  dirty trees never share a tag and an unchanged dirty tree keeps its tag;
* outside git (or without ``git``), ``c-<hash of the project folder's content>``.

Only ``git`` subprocesses and file reads: no Docker, cheap enough for ``plan``.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
from pathlib import Path

# Never part of the source: VCS data, deployer's own state, bytecode caches.
SKIP_DIRS = frozenset({".git", ".deployer", "__pycache__"})
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_HASH_LEN = 12


def project_tag(root: Path) -> str:
    """The release tag of the project in ``root`` (a valid Docker tag)."""
    root = Path(root).resolve()
    tag = _git_tag(root)
    if tag is None:
        tag = "c-" + content_hash(root)
    assert TAG_RE.fullmatch(tag), tag
    return tag


def is_valid_tag(tag: str) -> bool:
    """Whether ``tag`` is acceptable to Docker as an image tag (for ``--tag``)."""
    return TAG_RE.fullmatch(tag) is not None


def content_hash(root: Path) -> str:
    """A short hash of every file under ``root``: relative path, executable bit
    and content (symlinks by their target), in a deterministic order."""
    h = hashlib.sha256()
    for rel, full in _walk(root):
        st = full.lstat()
        h.update(rel.encode("utf-8", "surrogateescape") + b"\0")
        if stat.S_ISLNK(st.st_mode):
            h.update(b"l" + os.readlink(full).encode("utf-8", "surrogateescape"))
        else:
            h.update(b"x" if st.st_mode & 0o111 else b"f")
            _hash_file(h, full)
        h.update(b"\0")
    return h.hexdigest()[:_HASH_LEN]


def _walk(root: Path) -> list[tuple[str, Path]]:
    out: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        base = Path(dirpath)
        for name in filenames:
            full = base / name
            out.append((full.relative_to(root).as_posix(), full))
    # Sort on the whole relative path so the order does not depend on the walk.
    out.sort(key=lambda item: item[0])
    return out


def _hash_file(h: hashlib._Hash, path: Path) -> None:
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (a hang).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:  # a socket, a file vanishing mid-walk, no permission
        h.update(b"?")
        return
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or device: never read it
            h.update(b"?")
            return
        with os.fdopen(fd, "rb", closefd=False) as f:
            for chunk in iter(lambda: f.read(1 << 16), b""):
                h.update(chunk)
    except OSError:
        h.update(b"?")
    finally:
        os.close(fd)


def _git(root: Path, *args: str) -> bytes | None:
    """Run git in ``root``; ``None`` when git is missing or the command fails."""
    env = {**os.environ, "LC_ALL": "C", "GIT_OPTIONAL_LOCKS": "0"}
    # A GIT_DIR inherited from a hook would point git at some other repository.
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        env.pop(var, None)
    try:
        proc = subprocess.run(
            ["git", *args], cwd=root, env=env, capture_output=True, check=False
        )
    except (FileNotFoundError, PermissionError, NotADirectoryError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _git_tag(root: Path) -> str | None:
    sha = _git(root, "rev-parse", f"--short={_HASH_LEN}", "--verify", "-q", "HEAD^{commit}")
    if not sha:  # not a repository, or one without any commit yet
        return None
    tag = sha.decode().strip()
    dirty = _dirty_hash(root)
    return f"{tag}-dirty-{dirty}" if dirty else tag


def _dirty_hash(root: Path) -> str | None:
    """A hash of the uncommitted changes under ``root`` (``None`` when clean).

    Scoped to the project folder: edits elsewhere in a bigger repository do not
    change what this project builds. Untracked files count (a new file is
    typically copied into an image); ignored ones do not.
    """
    status = _git(
        root, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--", "."
    )
    if status is None or not status.strip(b"\0"):
        return None
    diff = _git(root, "diff", "HEAD", "--binary", "--no-color", "--no-ext-diff", "--", ".")
    untracked = _git(
        root, "ls-files", "-z", "--others", "--exclude-standard", "--full-name", "--", "."
    )
    toplevel = _git(root, "rev-parse", "--show-toplevel")
    h = hashlib.sha256()
    h.update(diff or b"")
    if untracked and toplevel:
        top = Path(toplevel.decode().strip())
        for rel in sorted(p for p in untracked.split(b"\0") if p):
            parts = rel.decode("utf-8", "surrogateescape").split("/")
            if any(p in SKIP_DIRS for p in parts):
                continue
            h.update(b"\0untracked\0" + rel + b"\0")
            full = top / Path(*parts)
            if full.is_symlink():
                h.update(os.readlink(full).encode("utf-8", "surrogateescape"))
            else:
                _hash_file(h, full)
    if not diff and h.digest() == hashlib.sha256(b"").digest():
        # Only skipped paths (e.g. an unignored .deployer/) differ: clean.
        return None
    return h.hexdigest()[:_HASH_LEN]
