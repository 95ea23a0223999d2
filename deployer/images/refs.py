"""Image references, as pure string functions (no Docker, no I/O).

Why not the Docker SDK's parser: these run in ``plan`` and in templates, which
must stay fast and must not need an engine.
"""

from __future__ import annotations

import re

DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
# Docker's own aliases for Docker Hub: a reference there carries no server part.
HUB_SERVERS = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)
HUB_LOGIN = "https://index.docker.io/v1/"


def normalize_server(server: str | None) -> str | None:
    """The registry host as it appears in references: no scheme, no trailing
    slash; ``None`` for Docker Hub."""
    if server is None:
        return None
    s = server.strip()
    for scheme in ("https://", "http://"):
        if s.startswith(scheme):
            s = s[len(scheme):]
    s = s.rstrip("/")
    if not s or s in HUB_SERVERS or s.startswith("index.docker.io/"):
        return None
    return s


def login_server(server: str | None) -> str:
    """The name ``docker login`` uses for the registry (Hub's is a URL)."""
    s = normalize_server(server)
    return s if s is not None else HUB_LOGIN


def repository_name(server: str | None, repository: str) -> str:
    """``server/repository``, or just ``repository`` on Docker Hub."""
    s = normalize_server(server)
    return f"{s}/{repository}" if s else repository


def image_ref(server: str | None, repository: str, tag: str) -> str:
    """``server/repository:tag``: the name an image is built, tagged and pushed as."""
    return f"{repository_name(server, repository)}:{tag}"


def pinned_ref(server: str | None, repository: str, tag: str, digest: str) -> str:
    """``server/repository:tag@sha256:digest``: what hosts pull. The tag is for
    people; the digest is what the engine resolves, so the bytes cannot move."""
    if not DIGEST_RE.fullmatch(digest):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return f"{image_ref(server, repository, tag)}@{digest}"


def split_ref(ref: str) -> tuple[str, str | None, str | None]:
    """``name[:tag][@digest]`` -> ``(name, tag, digest)``; the name keeps its
    server (a ``:port`` in the server is not mistaken for a tag)."""
    name, _, digest = ref.partition("@")
    tag: str | None = None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    return name, tag, digest or None


def registry_of(ref: str) -> str | None:
    """The registry host of a reference, by Docker's rule (the first path
    component names a host if it has a '.' or ':' or is 'localhost');
    ``None`` means Docker Hub."""
    name = split_ref(ref)[0]
    first, sep, _ = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return normalize_server(first)
    return None
