"""The blob store behind ``registry: none``: registry blobs made from local images.

Hosts pull images from deployer itself (:mod:`.serve`), so deployer needs
what a registry holds: gzip-compressed layers, the image config and a
manifest, each named by its sha256. This module makes them from the local
engine's image (``docker save``) and keeps them under
``<project>/.deployer/images/``:

    blobs/sha256/<hex>       layers (gzip), image configs, by digest
    manifests/sha256/<hex>   image manifests (Docker schema 2), by digest
    layers/<diff-id hex>     "<blob digest> <size>" of that uncompressed layer

Why a cache, and why the compression is deterministic (gzip level 6, no
name, mtime 0): a host skips a layer only when the manifest names a blob it
already pulled. Compressing each layer once and reusing the bytes keeps a
layer's blob digest, and so the manifest digest, stable from ship to ship:
the pinned reference ``127.0.0.1:PORT/repo:tag@sha256:...`` identifies
exactly the bytes built, a rebuilt image with one changed layer sends that
layer only, and an unchanged image keeps its digest (the host stays
``unchanged``). The config blob is the engine's own config, so the image id
on the host equals the local one.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import DeployError
from .engine import Engine, EngineError

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
GZIP_LEVEL = 6
_CHUNK = 1 << 20


def store_dir(root: Path) -> Path:
    """Where a project's blobs live (git-ignored with the rest of .deployer/)."""
    return root / ".deployer" / "images"


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int


@dataclass(frozen=True)
class Served:
    """An image as the hosts get it: its manifest digest and what it names."""

    digest: str
    config: Blob
    layers: tuple[Blob, ...]

    @property
    def size(self) -> int:
        """Bytes a host lacking every layer would be sent (blobs; the manifest
        is a few hundred bytes more)."""
        return self.config.size + sum(b.size for b in self.layers)


class _Hashing:
    """A write-only file that hashes and counts what passes through."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        self.out.write(data)
        return len(data)

    def flush(self) -> None:
        self.out.flush()


class _Chunks:
    """Read an iterator of byte chunks as a file (for ``tarfile`` in stream mode)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it: Iterator[bytes] = iter(chunks)
        self._buf = b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            try:
                self._buf += next(self._it)
            except StopIteration:
                break
        if n < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out


class BlobStore:
    """The content-addressed files of one project (see the module doc)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / _hex(digest)

    def manifest_path(self, digest: str) -> Path:
        return self.root / "manifests" / "sha256" / _hex(digest)

    def _layer_record(self, diff_id: str) -> Path:
        return self.root / "layers" / _hex(diff_id)

    def layer_blob(self, diff_id: str) -> Blob | None:
        """The compressed blob made from ``diff_id`` earlier, if it is still here."""
        try:
            digest, size = self._layer_record(diff_id).read_text().split()
        except (OSError, ValueError):
            return None
        blob = Blob(digest, int(size))
        path = self.blob_path(digest)
        return blob if path.is_file() and path.stat().st_size == blob.size else None

    def _write_atomic(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)

    def served(self, manifest_digest: str) -> Served | None:
        """What a stored manifest names (``plan`` sizes), or None."""
        try:
            data = json.loads(self.manifest_path(manifest_digest).read_bytes())
            return Served(
                manifest_digest,
                Blob(data["config"]["digest"], int(data["config"]["size"])),
                tuple(Blob(x["digest"], int(x["size"])) for x in data["layers"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    # -- making blobs ----------------------------------------------------------

    def prepare(self, engine: Engine, name: str, ref: str) -> Served:
        """Blobs and manifest for the local image ``ref``; ``docker save`` runs
        only when a layer or the config is not in the store yet. Returns what
        hosts are served (its ``digest`` pins the reference)."""
        try:
            local = engine.image(ref)
        except EngineError as e:
            raise DeployError(f"image {name!r}: cannot inspect {ref}: {e.message}") from None
        if local is None:
            raise DeployError(f"image {name!r}: {ref} is not in the local engine; build it first")
        if not local.diff_ids:
            raise DeployError(f"image {name!r}: the engine reports no layers for {ref}")
        config_path = self.blob_path(local.id)
        missing = {d for d in local.diff_ids if self.layer_blob(d) is None}
        if missing or not config_path.is_file():
            try:
                self._save(engine, ref, local.id, missing)
            except EngineError as e:
                raise DeployError(f"image {name!r}: docker save {ref} failed: {e.message}") \
                    from None
        lost = [d for d in local.diff_ids if self.layer_blob(d) is None]
        if lost or not config_path.is_file():
            what = f"layer {lost[0]}" if lost else "the image config"
            raise DeployError(f"image {name!r}: docker save {ref} did not contain {what}")
        served = self._manifest(local.id, local.diff_ids)
        if served is None:  # a blob vanished since the check above
            raise DeployError(f"image {name!r}: the blob store lost a blob of {ref}; ship again")
        return served

    def cached(self, engine: Engine, ref: str) -> Served | None:
        """What :meth:`prepare` would return for ``ref``, from the store alone
        (no ``docker save``): None when the engine lacks the image or the
        store lacks a blob of it. For ``plan --diff``: touches no host (at
        most the manifest file is written into the store)."""
        try:
            local = engine.image(ref)
        except EngineError:
            return None
        if local is None or not local.diff_ids:
            return None
        return self._manifest(local.id, local.diff_ids)

    def _manifest(self, image_id: str, diff_ids: list[str]) -> Served | None:
        """The manifest naming ``image_id``'s stored blobs (written once), or
        None when one is missing."""
        config_path = self.blob_path(image_id)
        blobs = [self.layer_blob(d) for d in diff_ids]
        if not config_path.is_file() or any(b is None for b in blobs):
            return None
        config = Blob(image_id, config_path.stat().st_size)
        layers = tuple(b for b in blobs if b is not None)
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "size": config.size, "digest": config.digest},
            "layers": [{"mediaType": LAYER_TYPE, "size": b.size, "digest": b.digest}
                       for b in layers],
        }, separators=(",", ":")).encode()
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        path = self.manifest_path(digest)
        if not path.is_file():
            self._write_atomic(path, manifest)
        return Served(digest, config, layers)

    def _save(self, engine: Engine, ref: str, image_id: str, wanted: set[str]) -> None:
        """Stream ``docker save`` once: keep the config, compress the wanted
        layers. Handles both layouts: the classic one (``<id>/layer.tar``,
        ``<config hex>.json``) and the OCI one (``blobs/sha256/<hex>``)."""
        config_hex = _hex(image_id)
        with tarfile.open(fileobj=_Chunks(engine.save(ref)), mode="r|") as tar:  # type: ignore[call-overload]
            for member in tar:
                if not member.isfile():
                    continue
                base = member.name.rsplit("/", 1)[-1]
                is_config = member.name in (f"{config_hex}.json", f"blobs/sha256/{config_hex}")
                is_layer = base == "layer.tar" or (
                    member.name.startswith("blobs/sha256/") and f"sha256:{base}" in wanted)
                if not (is_config or is_layer):
                    continue
                f = tar.extractfile(member)
                if f is None:
                    continue
                if is_config:
                    data = f.read()
                    if "sha256:" + hashlib.sha256(data).hexdigest() != image_id:
                        raise DeployError(f"docker save {ref}: its config is not {image_id}")
                    self._write_atomic(self.blob_path(image_id), data)
                else:
                    self._compress(f, wanted)

    def _compress(self, src: IO[bytes], wanted: set[str]) -> None:
        """gzip one layer into the store (deterministically) and record which
        diff id it is. The classic layout names layers by a v1 id, not their
        digest, so a layer is first spooled and hashed (cheap); only a wanted
        one is compressed (the costly part)."""
        blobs = self.root / "blobs" / "sha256"
        blobs.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=blobs) as spool:
            raw = hashlib.sha256()
            while chunk := src.read(_CHUNK):
                raw.update(chunk)
                spool.write(chunk)
            diff_id = "sha256:" + raw.hexdigest()
            if diff_id not in wanted:
                return
            spool.seek(0)
            fd, tmp = tempfile.mkstemp(dir=blobs, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as out:
                    hashing = _Hashing(out)
                    with gzip.GzipFile(filename="", mode="wb", fileobj=hashing,
                                       compresslevel=GZIP_LEVEL, mtime=0) as gz:
                        while chunk := spool.read(_CHUNK):
                            gz.write(chunk)
                digest = "sha256:" + hashing.sha.hexdigest()
                os.replace(tmp, self.blob_path(digest))
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
        self._write_atomic(self._layer_record(diff_id), f"{digest} {hashing.size}\n".encode())
        wanted.discard(diff_id)


def _hex(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or not all(c in "0123456789abcdef"
                                                         for c in hexpart):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return hexpart
