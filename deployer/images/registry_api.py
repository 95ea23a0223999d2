"""A tag's manifest digest straight from the registry's HTTP API (v2).

``ship --skip-build`` needs nothing from Docker but that digest. Asking the
engine for it (``/distribution/<ref>/json``) meant importing the Docker SDK
and letting dockerd make the same registry round trips: together most of a
no-op ship's time (see bench/results). This asks the registry itself with the
standard library: one HEAD of ``/v2/<repository>/manifests/<tag>``, answering
the auth challenge (Basic, or a Bearer token from the realm) once.

It is a fast path only: any answer it does not fully understand (Docker Hub,
plain HTTP, an unknown auth scheme, a TLS or network error, a 404) returns
``None`` and the caller asks the engine, whose errors are the reference.
Trust: Docker's per-registry CA, ``/etc/docker/certs.d/<server>/ca.crt``
(``DEPLOYER_DOCKER_CERTS_D``), when there is one, else the system CAs; a
certificate either does not verify sends the question to the engine.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import ssl
import urllib.parse
from pathlib import Path

from .refs import DIGEST_RE, normalize_server

TIMEOUT = 10.0
# What `docker pull` accepts: the registry then answers with the digest of
# whatever the tag names (an index for multi-platform images, else a manifest).
ACCEPT = ", ".join((
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
))
_PARAM = re.compile(r'(\w+)="([^"]*)"')


def _certs_d() -> Path:
    return Path(os.environ.get("DEPLOYER_DOCKER_CERTS_D", "/etc/docker/certs.d"))


def _context(server: str) -> ssl.SSLContext:
    """Docker's per-registry CA alone when there is one (loading the system
    bundle as well cost 50 ms, a tenth of a no-op ship's CPU): a registry it
    does not verify fails here and is asked through the engine, which also
    trusts the system CAs. Else the system CAs."""
    ca = _certs_d() / server / "ca.crt"
    if ca.is_file():
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cafile=str(ca))
        return ctx
    return ssl.create_default_context()


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _bearer(challenge: str, auth: str | None, ctx: ssl.SSLContext) -> str | None:
    """A token from the challenge's realm (credentials sent only over HTTPS)."""
    params = dict(_PARAM.findall(challenge))
    realm = urllib.parse.urlsplit(params.get("realm", ""))
    if realm.scheme != "https" or not realm.hostname:
        return None
    query = urllib.parse.urlencode(
        {k: params[k] for k in ("service", "scope") if k in params}
    )
    conn = http.client.HTTPSConnection(realm.hostname, realm.port or 443, context=ctx,
                                       timeout=TIMEOUT)
    try:
        conn.request("GET", f"{realm.path or '/'}?{query}",
                     headers={"Authorization": auth} if auth else {})
        resp = conn.getresponse()
        if resp.status != 200:
            return None
        data = json.loads(resp.read())
    finally:
        conn.close()
    token = data.get("token") or data.get("access_token") if isinstance(data, dict) else None
    return f"Bearer {token}" if isinstance(token, str) and token else None


def manifest_digest(
    server: str | None,
    repository: str,
    tag: str,
    username: str | None = None,
    password: str | None = None,
) -> str | None:
    """The digest ``server/repository:tag`` names now, or ``None`` for "ask
    the engine" (never raises for a registry's answer or a network error)."""
    host = normalize_server(server)
    if not host or "/" in host:
        return None  # Docker Hub (its own names and auth) or a path: the engine knows
    try:
        return _head(host, repository, tag, username, password)
    except (OSError, ssl.SSLError, http.client.HTTPException, ValueError):
        return None


def _head(host: str, repository: str, tag: str, username: str | None,
          password: str | None) -> str | None:
    ctx = _context(host)
    hostname, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
    conn = http.client.HTTPSConnection(hostname or host, int(port) if port else 443,
                                       context=ctx, timeout=TIMEOUT)
    path = f"/v2/{repository}/manifests/{urllib.parse.quote(tag)}"
    basic = _basic(username, password) if username and password else None
    try:
        headers = {"Accept": ACCEPT}
        for _attempt in range(2):
            conn.request("HEAD", path, headers=headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                digest = resp.getheader("Docker-Content-Digest") or ""
                return digest if DIGEST_RE.fullmatch(digest) else None
            if resp.status != 401 or "Authorization" in headers:
                return None
            challenge = resp.getheader("WWW-Authenticate") or ""
            scheme = challenge.split(" ", 1)[0].lower()
            if scheme == "basic" and basic:
                headers["Authorization"] = basic
            elif scheme == "bearer":
                token = _bearer(challenge, basic, ctx)
                if token is None:
                    return None
                headers["Authorization"] = token
            else:
                return None
        return None
    finally:
        conn.close()
