"""Is there room for this release? Judged before the upload and the pull.

The release needs its files on the deploy dir's filesystem and its images
that are not on the host yet on the Docker root's, each plus ``min_free``
(``deployer.yaml``, default 2GB); when both are one filesystem, the sum.
Too little is a host failure before anything changes, naming the path, the
space needed and the space free.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping

from deployer.commands import diskspace as cmds
from deployer.commands.diskspace import FreeSpace, Mount
from deployer.errors import HostError
from deployer.remote.base import Executor


def human(n: int) -> str:
    """Bytes as people read them (decimal units, like ``min_free: 2GB``)."""
    x = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if x < 1000 or unit == "TB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1000
    return f"{n} B"


def shortage(free: FreeSpace, files: int, min_free: int) -> str | None:
    """None when the release fits, else what is missing where."""
    need: dict[str, tuple[Mount, list[tuple[str, int]]]] = {}
    for m, what, size in ((free.deploy_dir, "release files", files),
                          (free.docker_root, "images to pull", free.images_missing)):
        if m is None:
            continue
        entry = need.setdefault(m.mount, (m, []))
        entry[1].append((what, size))
    for m, parts in need.values():
        total = sum(s for _, s in parts) + min_free
        if m.free < total:
            detail = " + ".join(f"{what} {human(s)}" for what, s in parts if s)
            detail = f"{detail} + min_free {human(min_free)}" if detail else (
                f"min_free {human(min_free)}")
            return (f"not enough disk space on {m.path} (filesystem {m.mount}): needs "
                    f"{human(total)} ({detail}), {human(m.free)} free")
    return None


class ImageSizes:
    """:func:`local_image_sizes` of a run's images, looked up once, when the
    first host needs them (a no-op ship never does), from any thread."""

    def __init__(self, refs: Mapping[str, str]) -> None:
        self._refs = dict(refs)
        self._sizes: dict[str, int] | None = None
        self._lock = threading.Lock()

    def get(self) -> dict[str, int]:
        with self._lock:
            if self._sizes is None:
                self._sizes = local_image_sizes(self._refs)
            return self._sizes


def local_image_sizes(refs: Mapping[str, str]) -> dict[str, int]:
    """The size of each image in the local engine (what a pull unpacks on a
    host, about), by ref; 0 for one the engine does not have (``--skip-build``
    on another machine) or when no engine answers."""
    out = dict.fromkeys(refs.values(), 0)
    if not out:
        return out
    try:
        import docker

        client = docker.from_env()
    except Exception:
        return out
    try:
        for ref in refs.values():
            with contextlib.suppress(Exception):
                out[ref] = int(client.images.get(ref.split("@", 1)[0]).attrs.get("Size") or 0)
    finally:
        client.close()
    return out


def check(ex: Executor, host: str, deploy_dir: str, image_sizes: Mapping[str, int],
          files: int, min_free: int, *, sudo: bool = False) -> None:
    """Probe the host (one command) and raise :class:`HostError` when the
    release does not fit. A host whose ``df`` says nothing is not refused."""
    res = ex.run(cmds.probe(deploy_dir, image_sizes, sudo=sudo))
    why = shortage(cmds.parse_free(res.stdout, deploy_dir), files, min_free)
    if why is not None:
        raise HostError(host, "check free space", why,
                        "free space on the host (old images: `deployer prune ENV`), "
                        "or lower min_free in deployer.yaml")
