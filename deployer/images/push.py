"""Log in to the project's registry and push an image, once.

Login runs first in a ship (before any build and long before any host), so a
wrong password costs seconds, not a build. A push is skipped when the registry
already holds this very image under the tag (same manifest digest): nothing is
transferred and the user is told so.
"""

from __future__ import annotations

import re

from ..config.models import RegistryConfig
from ..errors import DeployError
from ..secrets import mask, masker
from .engine import Auth, Engine, EngineError
from .progress import ImageReporter
from .refs import DIGEST_RE, login_server, normalize_server

_UNREACHABLE = (
    "connection refused",
    "no such host",
    "no route to host",
    "network is unreachable",
    "i/o timeout",
    "timeout",
    "timed out",
    "deadline exceeded",
    "server misbehaving",
    "connection reset",
    "unexpected eof",
)
_UNAUTHORIZED = ("401", "unauthorized", "authentication required", "incorrect username")
_DIGEST_IN_STATUS = re.compile(r"digest: (sha256:[0-9a-f]{64})")


def registry_auth(registry: RegistryConfig) -> Auth | None:
    """The engine's auth config for the registry; ``None`` without credentials."""
    if not registry.username or not registry.password:
        return None
    masker.add(registry.password)  # a literal password in YAML is a secret too
    return {
        "username": str(registry.username),
        "password": str.__str__(registry.password),
        "serveraddress": login_server(registry.server),
    }


def describe(registry: RegistryConfig) -> str:
    return normalize_server(registry.server) or "Docker Hub"


def registry_error(registry: RegistryConfig, action: str, text: str) -> DeployError:
    """One clear line for a registry failure: wrong credentials, unreachable,
    untrusted TLS, or else the engine's own words."""
    where = describe(registry)
    low = text.lower()
    user = registry.username
    if any(k in low for k in ("x509", "certificate")):
        msg = (
            f"registry {where}: TLS certificate not trusted by the Docker engine ({action}); "
            f"put the registry's CA in /etc/docker/certs.d/{where}/ca.crt"
        )
    elif "server gave http response to https client" in low:
        msg = f"registry {where} speaks plain HTTP, the Docker engine expects HTTPS ({action})"
    elif any(k in low for k in _UNAUTHORIZED):
        who = f"user {user!r}" if user else "no credentials"
        msg = (
            f"registry {where}: {action} refused for {who}: wrong username or password "
            "(check registry.username/password)"
        )
    elif any(k in low for k in _UNREACHABLE):
        reason = _last_clause(text)
        msg = f"registry {where} is unreachable ({action}): {reason}"
    else:
        msg = f"registry {where}: {action} failed: {' '.join(text.split())}"
    return DeployError(mask(msg))


def login(engine: Engine, registry: RegistryConfig) -> None:
    """Check the credentials now, so a wrong password fails before any work.
    Without credentials there is nothing to check (public or anonymous push)."""
    if not registry.username or not registry.password:
        return
    masker.add(registry.password)
    try:
        engine.login(login_server(registry.server), registry.username, str(registry.password))
    except EngineError as e:
        raise registry_error(registry, "login", e.message) from None


def push_image(
    engine: Engine,
    name: str,
    repository: str,
    tag: str,
    registry: RegistryConfig,
    reporter: ImageReporter,
) -> str:
    """Push ``repository:tag`` (already tagged locally); returns the manifest digest."""
    ref = f"{repository}:{tag}"
    auth = registry_auth(registry)
    local = engine.image(ref)
    if local is None:
        raise DeployError(f"image {name!r}: {ref} is not in the local engine; build it first")
    reporter.start(name, "push", ref)
    try:
        remote = engine.registry_digest(ref, auth)
    except EngineError as e:
        raise registry_error(registry, "checking " + ref, e.message) from None
    if remote and f"{repository}@{remote}" in local.repo_digests:
        reporter.note(name, f"already in registry ({remote}), nothing to push")
        reporter.done(name, f"{ref}@{remote}")
        return remote
    if remote:
        reporter.note(name, f"the registry's {ref} is other bytes ({remote[:19]}); replacing it")

    digest: str | None = None
    try:
        for msg in engine.push(repository, tag, auth):
            if "error" in msg or "errorDetail" in msg:
                detail = msg.get("errorDetail") or {}
                text = str(msg.get("error") or detail.get("message"))
                raise registry_error(registry, f"push of {ref}", text)
            aux = msg.get("aux")
            if isinstance(aux, dict) and aux.get("Digest"):
                digest = str(aux["Digest"])
            status = str(msg.get("status") or "")
            if msg.get("id") and status and "refers to repository" not in status:
                progress = msg.get("progressDetail") or {}
                reporter.layer(
                    name, str(msg["id"]), status, progress.get("current"), progress.get("total")
                )
            elif m := _DIGEST_IN_STATUS.search(status):
                digest = digest or m.group(1)
    except EngineError as e:
        raise registry_error(registry, f"push of {ref}", e.message) from None
    if not digest or not DIGEST_RE.fullmatch(digest):
        raise DeployError(f"image {name!r}: the push of {ref} reported no digest")
    reporter.done(name, f"{ref}@{digest}")
    return digest


def _last_clause(text: str) -> str:
    """``Get "https://x/v2/": dial tcp x: connect: connection refused`` ->
    ``connect: connection refused`` (the part a person can act on)."""
    text = " ".join(text.split())
    parts = text.split(": ")
    return ": ".join(parts[-2:]) if len(parts) >= 2 else text
