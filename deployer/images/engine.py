"""The one place that talks to a Docker engine (the Docker SDK's low-level API).

Why a seam: builds run on the local engine today (``DOCKER_HOST`` honoured);
a remote builder later only has to provide these few methods. Callers get
plain data (dicts of the engine's JSON stream, ids, digests) and
:class:`EngineError`, never SDK types, and turn them into user messages.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DeployError

# Builds and pushes stream for minutes and a RUN step may be silent for long;
# the SDK's default 60 s read timeout would cut them off.
STREAM_TIMEOUT = 3600

Auth = Mapping[str, str]


class EngineError(Exception):
    """The engine (or the registry behind it) refused a request."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class LocalImage:
    id: str
    repo_digests: list[str] = field(default_factory=list)
    #: the uncompressed layers' digests, bottom first (``RootFS.Layers``)
    diff_ids: list[str] = field(default_factory=list)
    size: int = 0  # uncompressed bytes, all layers


class Engine:
    """A Docker engine reached through the SDK's low-level ``APIClient``."""

    def __init__(self, api: Any) -> None:
        self.api = api

    @classmethod
    def from_env(cls) -> Engine:
        """The engine of ``DOCKER_HOST`` (or the local socket); fails with one
        line when nothing answers, before any work starts."""
        import docker
        from docker.errors import DockerException

        where = os.environ.get("DOCKER_HOST") or "the local socket"
        try:
            client = docker.from_env(timeout=STREAM_TIMEOUT)
            client.api.ping()
        except (DockerException, OSError) as e:
            raise DeployError(
                f"cannot reach the Docker engine at {where}: {_short(e)}",
                "start dockerd, or set DOCKER_HOST to an engine that runs",
            ) from None
        return cls(client.api)

    def close(self) -> None:
        self.api.close()

    # -- registry --------------------------------------------------------------
    def login(self, server: str, username: str, password: str) -> None:
        """Check the credentials against the registry (the engine does the
        round trip). ``reauth`` so a cached login never hides a wrong password."""
        with _errors():
            self.api.login(username=username, password=password, registry=server, reauth=True)

    def registry_digest(self, ref: str, auth: Auth | None) -> str | None:
        """The manifest digest the registry holds for ``ref``; ``None`` if it has none."""
        try:
            with _errors():
                data = self.api.inspect_distribution(ref, auth_config=_auth(auth))
        except EngineError as e:
            if e.status == 404 or _says_not_found(e.message):
                return None
            raise
        digest = data.get("Descriptor", {}).get("digest")
        return str(digest) if digest else None

    # -- local images ------------------------------------------------------------
    def image(self, ref: str) -> LocalImage | None:
        """The local image ``ref`` names, or ``None`` when the engine lacks it."""
        try:
            with _errors():
                data = self.api.inspect_image(ref)
        except EngineError as e:
            if e.status == 404:
                return None
            raise
        return LocalImage(id=data["Id"], repo_digests=list(data.get("RepoDigests") or []),
                          diff_ids=list((data.get("RootFS") or {}).get("Layers") or []),
                          size=int(data.get("Size") or 0))

    def tag(self, image_id: str, name: str, tag: str) -> None:
        with _errors():
            self.api.tag(image_id, name, tag=tag, force=True)

    # -- streams -------------------------------------------------------------------
    def build(
        self,
        *,
        context: Path,
        dockerfile: str,
        tag: str,
        buildargs: Mapping[str, str],
        target: str | None,
        labels: Mapping[str, str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Build ``context`` (honouring its ``.dockerignore``) and stream the
        engine's JSON messages. ``pull=False``: base images come from the local
        engine first, so a build works without Docker Hub."""
        with _errors():
            stream = self.api.build(
                path=str(context),
                dockerfile=dockerfile,
                tag=tag,
                buildargs=dict(buildargs),
                target=target,
                labels=dict(labels or {}),
                rm=True,
                forcerm=True,
                pull=False,
                decode=True,
            )
            yield from stream

    def push(self, name: str, tag: str, auth: Auth | None) -> Iterator[dict[str, Any]]:
        with _errors():
            yield from self.api.push(
                name, tag=tag, stream=True, decode=True, auth_config=_auth(auth)
            )

    def save(self, ref: str) -> Iterator[bytes]:
        """``docker save ref``: the image as a tar stream, in chunks."""
        with _errors():
            yield from self.api.get_image(ref, chunk_size=1 << 20)

    def pull(self, ref: str, auth: Auth | None) -> Iterator[dict[str, Any]]:
        from .refs import split_ref

        name, tag, digest = split_ref(ref)
        with _errors():
            yield from self.api.pull(
                f"{name}@{digest}" if digest else name,
                tag=None if digest else (tag or "latest"),
                stream=True,
                decode=True,
                auth_config=_auth(auth),
            )


def _auth(auth: Auth | None) -> dict[str, str] | None:
    return dict(auth) if auth else None


def _says_not_found(text: str) -> bool:
    t = text.lower()
    return "manifest unknown" in t or "not found" in t or "no such" in t


def _short(e: BaseException) -> str:
    """The useful last part of an SDK or requests error, on one line."""
    text = getattr(e, "explanation", None) or str(e)
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    text = " ".join(str(text).split())
    return text or type(e).__name__


class _errors:
    """Turn SDK and transport errors into :class:`EngineError` (a context manager
    that also works around generator bodies)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None or isinstance(exc, (EngineError, DeployError, GeneratorExit)):
            return
        from docker.errors import APIError, DockerException
        from requests.exceptions import RequestException

        if isinstance(exc, APIError):
            status = exc.response.status_code if exc.response is not None else None
            raise EngineError(_short(exc), status) from None
        if isinstance(exc, (DockerException, RequestException, OSError)):
            raise EngineError(_short(exc)) from None
