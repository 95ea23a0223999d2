"""Config or data: the decision for every relative path a compose file
references.

- A path git tracks (outside a git repository: any path that exists) is
  config: it is copied into every release.
- A directory that is untracked, ignored or missing is data: it lives in
  ``<deploy_dir>/shared/``, is created empty and never uploaded.
- An untracked or ignored *file* used as a bind source is ambiguous: the user
  must say (``files: [{copy: PATH}]`` or ``shared: [PATH]``).
- ``shared: [PATH]`` in deployer.yaml forces data.

``env_file``s, ``.env`` and secret files are not decided here: they are
always copied, 0600.
"""

from __future__ import annotations

import posixpath
import subprocess
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Literal

Kind = Literal["config", "data", "uploaded", "ambiguous"]


def git_tracked(root: Path) -> frozenset[str] | None:
    """Paths git tracks under ``root`` (relative to it, POSIX), or None when
    ``root`` is not in a git work tree (or git is not installed)."""
    try:
        res = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z"],
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if res.returncode != 0:
        return None
    names = res.stdout.decode("utf-8", "surrogateescape").split("\0")
    return frozenset(n for n in names if n)


def tracked_dirs(tracked: Iterable[str]) -> frozenset[str]:
    """Every directory that holds a tracked file (``.`` included)."""
    dirs = {"."}
    for name in tracked:
        d = posixpath.dirname(name)
        while d and d not in dirs:
            dirs.add(d)
            d = posixpath.dirname(d)
    return frozenset(dirs)


def under(path: str, prefixes: Iterable[str]) -> bool:
    """``path`` is one of ``prefixes`` or inside one (POSIX, normalised)."""
    return any(p == "." or path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)


def classify(
    rel: str,
    root: Path,
    *,
    tracked: frozenset[str] | None,
    tracked_dir_set: frozenset[str],
    shared: Collection[str],
    uploaded: Collection[str],
) -> Kind:
    """Config, data, already uploaded (a ``files:`` entry), or ambiguous."""
    if under(rel, shared):
        return "data"
    if rel in uploaded or any(u == rel or u.startswith(rel.rstrip("/") + "/") for u in uploaded):
        return "uploaded"
    if rel == ".":
        return "config"
    local = root / rel
    if tracked is None:
        return "config" if local.exists() else "data"
    if rel in tracked or rel in tracked_dir_set:
        return "config"
    if local.is_file() or (local.exists() and not local.is_dir()):
        return "ambiguous"
    return "data"
