"""What a release carries besides rendered templates: project paths copied
byte for byte (bind-mount sources, ``env_file``, ``.env``, secret and config
files, ``extends`` files, and ``files: [{copy: ...}]`` entries).

:mod:`deployer.project` decides *which* paths are config (a
:class:`CopySpec` each) and which are data (``shared/``); this module's
consumers decide *how* they reach the host (expanded into files, hashed into
the fingerprint, sent as one tar stream).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

from deployer.errors import DeployError

# Copied files up to this size are read once per plan and kept (hosts share
# the ReleaseFile objects, so 100 hosts read a tree of small files once);
# larger ones are streamed from disk for each host.
SMALL_FILE = 256 * 1024


class SourceChanged(DeployError):
    """A copied file changed between ``plan`` and the upload: the manifest's
    hash or size would be a lie."""


@dataclass(frozen=True)
class CopySpec:
    """One project path (a file or a directory) carried into every release.

    ``source``: project-relative POSIX path, normalised.
    ``dest``: release-relative POSIX path (normally equal to ``source``, so
    the compose file's relative references resolve in the release folder).
    ``mode``: None keeps the local file's permission bits.
    ``secret``: ``env_file``, ``.env`` and secret files: uploaded 0600, and
    their content is never printed.
    ``exclude``: gitignore-style patterns, relative to a copied directory.
    ``origin``: where it came from, for messages and ``plan``
    (``service web: volumes[0]``, ``files[2]``, ``.env``).
    """

    source: str
    dest: str
    mode: int | None = None
    secret: bool = False
    exclude: tuple[str, ...] = ()
    origin: str = ""


@dataclass(frozen=True)
class ReleaseFile:
    """One file of a release, as uploaded.

    ``kind``: ``template`` (rendered per host; ``data`` holds the bytes) or
    ``copy`` (a project file shipped byte for byte; read from ``source`` when
    needed, so a large tree is not held in memory by every host's plan).
    ``origin``: the template path, or the project path it was copied from.
    ``secret``: content never printed (0600 files, env files, secrets).
    ``size``: for a copy, the size the file had when it was planned (the
    upload refuses a file that changed since: its hash is in the manifest).
    """

    dest: str
    mode: int
    origin: str
    kind: Literal["template", "copy"] = "template"
    data: bytes | None = None
    source: Path | None = None
    secret: bool = False
    size: int | None = None

    @property
    def length(self) -> int:
        """Size in bytes, without reading a copied file."""
        if self.data is not None:
            return len(self.data)
        if self.size is not None:
            return self.size
        return len(self.content)

    @property
    def content(self) -> bytes:
        if self.data is not None:
            return self.data
        if self.source is None:
            raise ValueError(f"release file {self.dest!r} has neither data nor a source")
        return self.source.read_bytes()

    @cached_property
    def small_content(self) -> bytes | None:
        """A small file's bytes, read once and checked against :attr:`sha256`
        (what is shipped is what the manifest says); None for a copy larger
        than :data:`SMALL_FILE`, which is streamed instead."""
        if self.data is not None:
            return self.data
        if self.length > SMALL_FILE:
            return None
        data = self.content
        if len(data) != self.length or hashlib.sha256(data).hexdigest() != self.sha256:
            raise SourceChanged(
                f"{self.origin}: the file changed after it was planned",
                "run the command again once it stopped changing",
            )
        return data

    @cached_property
    def sha256(self) -> str:
        """Computed once per object: hosts of one plan share copied files'
        objects, so a tree is hashed once however many hosts get it."""
        if self.data is not None or self.source is None:
            return hashlib.sha256(self.content).hexdigest()
        h = hashlib.sha256()
        with open(self.source, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
