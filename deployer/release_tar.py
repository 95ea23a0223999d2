"""A release as one tar stream (what ``ship`` sends), and as a folder on
disk (what ``plan --out`` writes): the same files, bytes and modes.

The stream is built by hand from :meth:`tarfile.TarInfo.tobuf` headers so
that it is truly streamed: a large copied file is read in chunks while it is
sent, never held whole in memory, and small files are batched into chunks of
about :data:`CHUNK` bytes so 1,000 files are not 1,000 channel writes.

The stream is deterministic: entries sorted (directories first, parents
before children, then files by path), ``mtime`` 0, uid/gid 0 and no owner
names. The host unpacks it with ``tar -x -p -m --no-same-owner``
(:func:`deployer.commands.release.receive_release`): exact modes, files owned
by the SSH user, and modification times of the unpack (so a web server's
``ETag``/``Last-Modified`` change with each release).
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import tarfile
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from deployer.errors import ConfigError
from deployer.release_files import ReleaseFile, SourceChanged

if TYPE_CHECKING:
    from deployer.plan import HostPlan, Plan

BLOCK = tarfile.BLOCKSIZE
CHUNK = 256 * 1024
DIR_MODE = 0o755
_READ = 1 << 20


__all__ = ["SourceChanged", "release_files", "tar_stream", "write_plan", "write_release"]


def release_files(hp: HostPlan, manifest: bytes) -> list[ReleaseFile]:
    """Every file of ``hp``'s release, ``manifest.json`` included (0600: it
    holds secret files' hashes)."""
    from deployer.plan import MANIFEST

    return [*hp.files, ReleaseFile(MANIFEST, 0o600, "deployer", data=manifest, secret=True)]


def all_dirs(files: Sequence[ReleaseFile], dirs: Sequence[str] = ()) -> list[str]:
    """The directories a release needs: ``dirs`` and every parent of a file,
    parents before children."""
    out: set[str] = set()
    for path in [*dirs, *(posixpath.dirname(f.dest) for f in files)]:
        while path and path not in out:
            out.add(path)
            path = posixpath.dirname(path)
    return sorted(out)


@lru_cache(maxsize=65536)
def _header(name: str, *, size: int, mode: int, is_dir: bool) -> bytes:
    """A pure function of its arguments: cached, so N hosts cost one header
    build per file."""
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    ti.size = 0 if is_dir else size
    ti.mode = mode
    ti.mtime = 0
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _check(dest: str) -> None:
    norm = posixpath.normpath(dest)
    if dest.startswith("/") or norm == ".." or norm.startswith("../") or norm != dest:
        raise ValueError(f"release path {dest!r} must be a normalised relative path")


def _data(f: ReleaseFile) -> Iterator[bytes]:
    """The file's bytes, in pieces: a small file's cached bytes (checked
    against its hash), or a large one read in chunks, which must still have
    its planned size."""
    small = f.small_content
    if small is not None or f.source is None:
        data = small if small is not None else f.content
        for at in range(0, len(data), _READ):  # a large template, in pieces
            yield data[at:at + _READ]
        return
    expected = f.length
    left = expected
    try:
        with open(f.source, "rb") as fh:
            while left > 0:
                piece = fh.read(min(_READ, left))
                if not piece:
                    break
                left -= len(piece)
                yield piece
            extra = fh.read(1)
    except OSError as e:
        raise SourceChanged(f"{f.origin}: cannot read it any more: {e}",
                            "run the command again") from None
    if left or extra:
        raise SourceChanged(
            f"{f.origin}: the file changed while it was being shipped "
            f"(planned {expected} bytes)", "run the command again once it stopped changing",
        )


def tar_stream(files: Sequence[ReleaseFile], dirs: Sequence[str] = ()) -> Iterator[bytes]:
    """The release as a tar archive, in chunks of about :data:`CHUNK` bytes."""
    buf = bytearray()
    for d in all_dirs(files, dirs):
        _check(d)
        buf += _header(d + "/", size=0, mode=DIR_MODE, is_dir=True)
    for f in sorted(files, key=lambda f: f.dest):
        _check(f.dest)
        size = f.length
        buf += _header(f.dest, size=size, mode=f.mode, is_dir=False)
        for piece in _data(f):
            buf += piece
            if len(buf) >= CHUNK:
                yield bytes(buf)
                buf.clear()
        pad = -size % BLOCK
        buf += b"\0" * pad
        if len(buf) >= CHUNK:
            yield bytes(buf)
            buf.clear()
    buf += b"\0" * (2 * BLOCK)  # end of archive
    yield bytes(buf)


# -- plan --out ---------------------------------------------------------------


def write_release(files: Sequence[ReleaseFile], dirs: Sequence[str], target: Path) -> None:
    """Write a release into the empty or absent folder ``target`` as the host
    would unpack it: directories 0755, each file's bytes and mode."""
    target.mkdir(parents=True, exist_ok=True)
    for d in all_dirs(files, dirs):
        p = target / d
        p.mkdir(exist_ok=True)
        os.chmod(p, DIR_MODE)
    for f in files:
        _check(f.dest)
        p = target / f.dest
        with open(p, "wb") as out:
            os.chmod(p, f.mode)  # before any byte: a secret is never readable by others
            for piece in _data(f):
                out.write(piece)


def write_plan(plan: Plan, out_dir: Path) -> list[Path]:
    """``plan --out``: each host's release folder under ``out_dir/<host>/``,
    exactly as it would be uploaded (manifest included). A folder left by an
    earlier ``--out`` (it holds a ``manifest.json``) is replaced; any other
    non-empty folder is refused, never deleted."""
    from deployer.plan import MANIFEST

    written: list[Path] = []
    for hp in plan.hosts:
        name = hp.host.name
        if name in {"", ".", ".."} or "/" in name or "\0" in name:
            raise ConfigError(f"--out: host name {name!r} cannot be a folder name",
                              "rename the host in the inventory")
        target = out_dir / name
        if target.exists():
            if not target.is_dir() or (any(target.iterdir())
                                       and not (target / MANIFEST).is_file()):
                raise ConfigError(
                    f"--out: {target} exists and is not a release folder from an earlier "
                    "`plan --out`", "choose an empty or new directory",
                )
            shutil.rmtree(target)
        manifest = hp.manifest_bytes(who="plan --out", when=_plan_time(plan.release))
        try:
            write_release(release_files(hp, manifest), hp.dirs, target)
        except OSError as e:  # a file as --out, a read-only or full disk, no permission
            raise ConfigError(
                f"--out {out_dir}: cannot write {target}: {e.strerror or e}",
                "pass a directory you can write to (it is created if missing)",
            ) from None
        written.append(target)
    return written


def _plan_time(release: str) -> str:
    """The release id's timestamp (``20261130T094500Z-tag``) in the
    manifest's ``created_at`` format, so two ``--out`` of one plan agree."""
    m = re.match(r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z", release)
    return f"{m[1]}-{m[2]}-{m[3]}T{m[4]}:{m[5]}:{m[6]}Z" if m else release
