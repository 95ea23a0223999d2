"""What ``plan`` says a ``registry: none`` ship would send each host, and
which digests it would pin (``plan --diff``), without building anything.

Plan changes nothing and builds nothing, and it assumes a host with nothing
deployed yet, so each host may be sent every layer of every image: the
figure is an upper bound ("up to N bytes"; a host that already has layers
gets fewer: dockerd pulls only what it lacks). It is exact (compressed, as
sent) when the image for this tag is built and its layers are in the
project's blob store; the image's uncompressed size when the store lacks
some layer; unknown when the image is not built yet (or no engine answers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import Project


def image_sends(project: Project, tag: str) -> dict[str, dict[str, Any]] | None:
    """Per image: ``{"ref", "bytes" (int or None), "compressed" (bool),
    "why"}``; None when the project has a registry (hosts pull from it)."""
    if not project.registry.none or not project.config.images:
        return None
    from ..errors import DeployError
    from .blobs import BlobStore, store_dir
    from .engine import Engine, EngineError
    from .refs import repository_name

    out: dict[str, dict[str, Any]] = {}
    try:
        engine: Engine | None = Engine.from_env()
    except DeployError:
        engine = None
    store = BlobStore(store_dir(project.root))
    try:
        for name, image in project.config.images.items():
            ref = f"{repository_name(project.registry.server, image.repository)}:{tag}"
            row: dict[str, Any] = {"ref": ref, "bytes": None, "compressed": False}
            out[name] = row
            if engine is None:
                row["why"] = "no Docker engine answers: size unknown"
                continue
            try:
                local = engine.image(ref)
            except EngineError:
                local = None
            if local is None:
                row["why"] = "not built yet for this tag: size unknown until ship builds it"
                continue
            blobs = [store.layer_blob(d) for d in local.diff_ids]
            if all(b is not None for b in blobs):
                row.update(bytes=sum(b.size for b in blobs if b is not None), compressed=True,
                           why="compressed layers, as sent")
            else:
                row.update(bytes=local.size, why="uncompressed size; less after gzip")
    finally:
        if engine is not None:
            engine.close()
    return out


def describe(sends: dict[str, dict[str, Any]]) -> str:
    """One line for plan's ``pull images`` step."""
    parts = []
    for name, row in sends.items():
        size = f"up to {row['bytes']} bytes" if row["bytes"] is not None else "size unknown"
        parts.append(f"{name} {size} ({row['why']})")
    return "over this host's SSH connection (registry: none): " + ", ".join(parts)


def cached_digests(project: Project, tag: str) -> dict[str, str]:
    """``registry: none``: the manifest digest each image built for ``tag``
    would be served with, from the local engine and the blob store only
    (images not built or not cached yet are left out)."""
    from ..errors import DeployError
    from .blobs import BlobStore, store_dir
    from .engine import Engine
    from .refs import repository_name

    try:
        engine = Engine.from_env()
    except DeployError:
        return {}
    store = BlobStore(store_dir(project.root))
    out: dict[str, str] = {}
    try:
        for name, image in project.config.images.items():
            ref = f"{repository_name(project.registry.server, image.repository)}:{tag}"
            served = store.cached(engine, ref)
            if served is not None:
                out[name] = served.digest
    finally:
        engine.close()
    return out
