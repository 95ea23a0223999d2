"""Free space on a host, in one round trip: the sizes of the release's
images that are not on the host yet (the images come on stdin: data, never
code), the Docker root directory, and ``df`` of it and of the deploy dir
(parsed by :func:`parse_free`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from deployer.commands.base import Command, Script

MARKER = "#deployer-diskspace"

_PROBE = r"""
d="$1"
need=0
while read -r ref size; do
  [ -n "$ref" ] || continue
  docker image inspect --format . "$ref" >/dev/null 2>&1 || need=$((need + size))
done
root=$(docker info --format '{{.DockerRootDir}}' 2>/dev/null) || root=
[ -n "$root" ] || root=/var/lib/docker
echo '#deployer-diskspace'
printf 'images=%s\n' "$need"
printf 'docker_root=%s\n' "$root"
printf 'df_root=%s\n' "$(df -Pk -- "$root" 2>/dev/null | tail -n 1)"
printf 'df_dir=%s\n' "$(df -Pk -- "$d" 2>/dev/null | tail -n 1)"
""".strip()


def probe(deploy_dir: str, image_sizes: Mapping[str, int], *, sudo: bool = False) -> Command:
    """``image_sizes``: ref -> bytes it takes once pulled (0 when unknown),
    sent as ``ref size`` lines on stdin (so ``plan``, which knows tags where
    ship pins digests, shows the same command). ``sudo``: docker needs it."""
    lines = "".join(f"{by_digest(ref)} {max(0, int(size))}\n"
                    for ref, size in sorted(image_sizes.items()))
    return Script(_PROBE, args=(deploy_dir,), sudo=sudo, stdin=lines,
                  description="check free space").command()


def by_digest(ref: str) -> str:
    """``name@sha256:...`` for a pinned ``name:tag@sha256:...`` (how a host
    that pulled it by digest knows it); other refs as they are."""
    name, at, digest = ref.partition("@")
    if not at:
        return ref
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    return f"{name}@{digest}"


@dataclass(frozen=True)
class Mount:
    path: str  # the path asked about
    mount: str  # where its filesystem is mounted
    free: int  # bytes available to non-root


@dataclass(frozen=True)
class FreeSpace:
    images_missing: int  # bytes of the release's images not on the host
    docker_root: Mount | None
    deploy_dir: Mount | None


def _df(line: str, path: str) -> Mount | None:
    parts = line.split()
    # Filesystem 1024-blocks Used Available Capacity Mounted-on
    if len(parts) < 6 or not parts[3].isdigit():
        return None
    return Mount(path, " ".join(parts[5:]), int(parts[3]) * 1024)


def parse_free(stdout: str, deploy_dir: str) -> FreeSpace:
    """The probe's answer; a ``df`` that printed nothing gives None (unknown)."""
    kv: dict[str, str] = {}
    lines = stdout.split(MARKER, 1)[-1].splitlines()
    for ln in lines:
        k, sep, v = ln.partition("=")
        if sep:
            kv[k.strip()] = v
    images = int(kv["images"]) if kv.get("images", "").isdigit() else 0
    root = kv.get("docker_root") or "/var/lib/docker"
    return FreeSpace(images, _df(kv.get("df_root", ""), root),
                     _df(kv.get("df_dir", ""), deploy_dir))
