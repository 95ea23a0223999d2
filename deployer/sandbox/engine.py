"""The local Docker engine, as the sandbox uses it: the client, archives put
into containers, exec, and lookups by the sandbox's labels."""

from __future__ import annotations

import io
import tarfile
import time
from typing import Any

from deployer.errors import DeployError
from deployer.sandbox.model import LABEL, LABEL_ROLE


def engine_client() -> Any:
    import docker
    import docker.errors

    try:
        client = docker.from_env(timeout=300)
        client.ping()
    except (docker.errors.DockerException, OSError) as e:
        raise DeployError(
            f"sandbox: no Docker engine answers ({e})",
            "start one (Debian: apt-get install docker.io, then dockerd) or set DOCKER_HOST",
        ) from e
    return client


def tar_archive(entries: list[tuple[str, bytes | None, int, int]]) -> bytes:
    """A tar of ``(absolute path, content or None for a directory, mode, uid)``;
    the gid equals the uid (root, or the deploy user's own group)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, content, mode, uid in entries:
            info = tarfile.TarInfo(path.lstrip("/"))
            info.mode = mode
            info.uid = info.gid = uid
            info.mtime = int(time.time())
            if content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def dir_entries(path: str, mode: int = 0o755, uid: int = 0) -> list[tuple[str, None, int, int]]:
    """Directory entries for ``path`` and its parents (so ownership is exact)."""
    parts = [p for p in path.strip("/").split("/") if p]
    return [("/" + "/".join(parts[: i + 1]), None, mode, uid) for i in range(len(parts))]


def exec_in(container: Any, argv: list[str]) -> tuple[int, str]:
    code, out = container.exec_run(argv, stdout=True, stderr=True)
    return int(code if code is not None else -1), (out or b"").decode(errors="replace")


def ensure_image(client: Any, image: str, what: str, hint: str) -> None:
    import docker.errors

    try:
        client.images.get(image)
        return
    except docker.errors.ImageNotFound:
        pass
    try:
        client.images.pull(image)
    except docker.errors.APIError as e:
        raise DeployError(
            f"sandbox: the {what} image {image!r} is not on the engine and cannot be pulled "
            f"({getattr(e, 'explanation', None) or e})",
            hint,
        ) from e


def find_containers(client: Any, sid: str, role: str) -> list[Any]:
    return list(
        client.containers.list(
            all=True, filters={"label": [f"{LABEL}={sid}", f"{LABEL_ROLE}={role}"]}
        )
    )


def ensure_volume(client: Any, name: str, labels: dict[str, str]) -> str:
    import docker.errors

    try:
        client.volumes.get(name)
    except docker.errors.NotFound:
        client.volumes.create(name=name, labels=labels)
    return name
