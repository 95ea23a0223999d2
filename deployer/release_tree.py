"""Expanding copied project paths (:class:`~deployer.release_files.CopySpec`)
into the release files they ship.

Rules (the README's "files: copy" section says the same):

- A file ships with its own permission bits (``st_mode & 0o777``) unless the
  spec forces a ``mode``; a secret (``env_file``, ``.env``, secret files)
  always ships 0600.
- A directory ships every regular file under it, except files git ignores
  (``git ls-files -co --exclude-standard`` when the project is in a git work
  tree; otherwise the ``.gitignore`` files from the project root down, read
  with ``pathspec``), ``.git`` itself, and the spec's ``exclude`` patterns
  (gitignore syntax, relative to the copied directory).
- A symlink whose target stays inside the project ships as the file it points
  to (its bytes and mode). A link that leaves the project, a dangling link and
  a link to a directory are refused, and so is anything that is not a regular
  file (a FIFO, a socket, a device).
- Two references to the same project path ship once; two different sources
  for one release path are an error.

An :class:`Expander` is made once per plan: every host's copies come out of
its cache, so a tree is walked, ``git`` is run and each file is hashed once
however many hosts share it (the :class:`ReleaseFile` objects are shared).
"""

from __future__ import annotations

import os
import posixpath
import stat
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from deployer.config.models import FileSpec
from deployer.errors import ConfigError
from deployer.release_files import CopySpec, ReleaseFile

if TYPE_CHECKING:
    from pathspec import GitIgnoreSpec

SECRET_MODE = 0o600
LOCAL_DIR = ".deployer"  # the project's local state: never part of a release


@dataclass(frozen=True)
class Expansion:
    """What a list of copy specs ships: files (sorted by dest) and the
    directories they came from (release paths, so an empty copied directory
    still exists on the host)."""

    files: tuple[ReleaseFile, ...]
    dirs: tuple[str, ...]


def file_copies(specs: Sequence[FileSpec], where: str) -> list[CopySpec]:
    """The ``copy`` entries of a ``files:`` list (``where`` names the list)."""
    return [
        CopySpec(source=str(f.copy_), dest=f.dest, mode=f.copy_mode, exclude=f.exclude,
                 origin=f"{where}[{i}]")
        for i, f in enumerate(specs)
        if f.copy_ is not None
    ]


class Expander:
    """Expands copy specs under ``root`` (the project directory), caching."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._specs: dict[CopySpec, Expansion] = {}
        self._lists: dict[tuple[CopySpec, ...], Expansion] = {}
        self._git: tuple[set[str] | None] | None = None  # (None,): not a git work tree
        self._ignores: dict[str, GitIgnoreSpec | None] = {}

    # -- public ------------------------------------------------------------

    def expand(self, specs: Iterable[CopySpec]) -> Expansion:
        """The files and directories ``specs`` ship, deduplicated by dest
        (hosts with the same specs get the same, cached, answer)."""
        key = tuple(specs)
        cached = self._lists.get(key)
        if cached is None:
            cached = self._lists[key] = self._merge(key)
        return cached

    def _merge(self, specs: tuple[CopySpec, ...]) -> Expansion:
        by_dest: dict[str, ReleaseFile] = {}
        dirs: set[str] = set()
        for spec in specs:
            exp = self._expand_one(spec)
            dirs.update(exp.dirs)
            for f in exp.files:
                seen = by_dest.get(f.dest)
                if seen is None:
                    by_dest[f.dest] = f
                elif seen.source != f.source:
                    raise ConfigError(
                        f"{spec.origin or spec.source}: release path {f.dest!r} would get "
                        f"two different files ({seen.origin} and {f.origin})",
                        "give one of them another dest",
                    )
                elif f.secret and not seen.secret:
                    by_dest[f.dest] = f  # the stricter reading wins: 0600, never printed
        return Expansion(tuple(by_dest[d] for d in sorted(by_dest)), tuple(sorted(dirs)))

    # -- one spec ----------------------------------------------------------

    def _expand_one(self, spec: CopySpec) -> Expansion:
        cached = self._specs.get(spec)
        if cached is not None:
            return cached
        where = spec.origin or spec.source
        path = self.root / spec.source
        if not os.path.lexists(path):
            raise ConfigError(
                f"{where}: {spec.source!r} not found in the project",
                f"create it, or fix the path (relative to {self.root})",
            )
        real = self._inside(path, where, spec.source)
        if real.is_dir():
            if path.is_symlink():
                raise ConfigError(
                    f"{where}: {spec.source!r} is a symlink to a directory",
                    "copy the directory it points to instead",
                )
            exp = Expansion(
                tuple(self._file(spec, rel, posixpath.normpath(posixpath.join(spec.dest, rel)),
                                 where)
                      for rel in self._walk(spec)),
                (spec.dest,) if spec.dest != "." else (),
            )
        else:
            exp = Expansion((self._file(spec, "", spec.dest, where),), ())
        self._specs[spec] = exp
        return exp

    def _file(self, spec: CopySpec, rel: str, dest: str, where: str) -> ReleaseFile:
        src_rel = posixpath.normpath(posixpath.join(spec.source, rel)) if rel else spec.source
        path = self.root / src_rel
        real = self._inside(path, where, src_rel)
        st = real.stat()
        if stat.S_ISDIR(st.st_mode):
            raise ConfigError(
                f"{where}: {src_rel!r} is a symlink to a directory",
                "copy the directory it points to with its own files entry, "
                "or exclude the link",
            )
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(
                f"{where}: {src_rel!r} is not a regular file (a FIFO, socket or device)",
                "remove it, or exclude it (files: exclude, or .gitignore)",
            )
        if spec.secret:
            mode = SECRET_MODE
        elif spec.mode is not None:
            mode = spec.mode
        else:
            mode = stat.S_IMODE(st.st_mode) & 0o777
        return ReleaseFile(dest, mode, src_rel, kind="copy", source=real, secret=spec.secret,
                           size=st.st_size)

    def _inside(self, path: Path, where: str, rel: str) -> Path:
        """``path`` with links resolved; refused unless it stays in the project."""
        try:
            real = path.resolve(strict=True)
        except (FileNotFoundError, RuntimeError):
            raise ConfigError(
                f"{where}: {rel!r} is a dangling or looping symlink",
                "fix the link or remove it",
            ) from None
        if real != self.root and self.root not in real.parents:
            raise ConfigError(
                f"{where}: {rel!r} links to {real}, outside the project",
                "copy that file into the project, or mount it from an absolute host path",
            )
        return real

    # -- which files of a directory ----------------------------------------

    def _walk(self, spec: CopySpec) -> list[str]:
        """Paths under the copied directory (relative to it) that ship."""
        base = spec.source
        tracked = self._git_files()
        if tracked is not None and self._git_ignored_dir(base):
            # A directory named to be copied that git ignores as a whole (a
            # build output such as dist/): the rules that ignore it cannot
            # mean "ship nothing"; the .gitignore files inside it still apply.
            rels = self._walk_plain(base, inherit=False)
        elif tracked is not None:
            prefix = "" if base == "." else base.rstrip("/") + "/"
            rels = sorted(p[len(prefix):] for p in tracked if p.startswith(prefix))
            # A tracked file deleted from the work tree is not shipped: the
            # work tree is what compose would read.
            rels = [r for r in rels if os.path.lexists(self.root / base / r)]
        else:
            rels = self._walk_plain(base)
        if spec.exclude:
            excl = _gitignore(spec.exclude)
            rels = [r for r in rels if not excl.match_file(r)]
        # deployer's own folder (sandbox keys, secrets files) never ships,
        # even when the whole project is mounted (.:/app).
        own = posixpath.relpath(LOCAL_DIR, base) + "/"
        return [r for r in rels if not r.startswith(own)]

    def _git_files(self) -> set[str] | None:
        """Files git tracks or would track (untracked, not ignored), relative
        to the project root; None when the project is not in a git work tree."""
        if self._git is None:
            self._git = (self._ask_git(),)
        return self._git[0]

    def _ask_git(self) -> set[str] | None:
        try:
            inside = subprocess.run(
                ["git", "-C", str(self.root), "rev-parse", "--is-inside-work-tree"],
                capture_output=True, text=True, check=False,
            )
        except OSError:  # no git binary
            return None
        if inside.returncode != 0 or inside.stdout.strip() != "true":
            return None
        res = subprocess.run(
            ["git", "-C", str(self.root), "ls-files", "-z", "-co", "--exclude-standard"],
            capture_output=True, check=False,
        )
        if res.returncode != 0:
            raise ConfigError(
                f"{self.root}: `git ls-files` failed: "
                f"{res.stderr.decode(errors='replace').strip()}",
                "fix the repository, or run outside git",
            )
        return {p for p in res.stdout.decode(errors="surrogateescape").split("\0") if p}

    def _git_ignored_dir(self, base: str) -> bool:
        res = subprocess.run(
            ["git", "-C", str(self.root), "check-ignore", "-q", "--", base.rstrip("/") + "/"],
            capture_output=True, check=False,
        )
        return res.returncode == 0

    def _walk_plain(self, base: str, *, inherit: bool = True) -> list[str]:
        """Outside git: every file, minus what the ``.gitignore`` files from
        the project root (``inherit``; else from ``base``) down to each
        directory ignore, minus ``.git``."""
        out: list[str] = []
        start = self.root / base
        # .gitignore files above the copied directory apply to it too.
        above: list[tuple[str, GitIgnoreSpec]] = []
        parts = Path(base).parts if inherit else ()
        for i in range(len(parts)):
            up = posixpath.join(*parts[:i]) if i else ""
            spec = self._ignore_file(up)
            if spec is not None:
                above.append((up, spec))
        stack: list[tuple[Path, list[tuple[str, GitIgnoreSpec]]]] = [(start, above)]
        while stack:
            d, rules = stack.pop()
            rel_d = d.relative_to(self.root).as_posix()
            here = self._ignore_file(rel_d)
            if here is not None:
                rules = [*rules, (rel_d, here)]
            for entry in sorted(os.scandir(d), key=lambda e: e.name):
                rel = posixpath.join(rel_d, entry.name)
                if entry.name == ".git":
                    continue
                is_dir = entry.is_dir(follow_symlinks=False)
                if _ignored(rules, rel, is_dir):
                    continue
                if is_dir:
                    stack.append((Path(entry.path), rules))
                else:
                    out.append(posixpath.relpath(rel, base))
        return sorted(out)

    def _ignore_file(self, rel_dir: str) -> GitIgnoreSpec | None:
        if rel_dir not in self._ignores:
            f = self.root / rel_dir / ".gitignore"
            self._ignores[rel_dir] = (
                _gitignore(f.read_text(errors="replace").splitlines()) if f.is_file() else None
            )
        return self._ignores[rel_dir]


def _gitignore(lines: Sequence[str]) -> GitIgnoreSpec:
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(lines)


def _ignored(rules: list[tuple[str, GitIgnoreSpec]], rel: str, is_dir: bool) -> bool:
    """Whether the nearest ``.gitignore`` rules ignore ``rel`` (a project path)."""
    verdict = False
    for base, spec in rules:
        sub = posixpath.relpath(rel, base) if base else rel
        if is_dir:
            sub += "/"
        result = spec.check_file(sub)
        if result.include is not None:
            verdict = bool(result.include)
    return verdict
