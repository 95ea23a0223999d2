"""``registry_api.manifest_digest`` against a real HTTPS server on loopback.

The server speaks the part of the registry v2 API the fast path uses: HEAD of
a manifest, a 401 challenge (Basic, or Bearer with a token realm), and
``Docker-Content-Digest``. TLS is real, with a CA made for the test and found
the way Docker finds it (``certs.d/<host:port>/ca.crt``). Every answer the
fast path does not fully trust must come back as ``None`` (ask the engine).
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deployer.images import registry_api
from deployer.sandbox.pki import make_ca, make_server_cert

DIGEST = "sha256:" + "ab" * 32
USER, PASSWORD = "ci", "s3cret"


@dataclass
class Behaviour:
    auth: str = "basic"  # basic | bearer | none | weird
    digest: str = DIGEST
    status: int = 200
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)


class Registry:
    def __init__(self, tmp: Path) -> None:
        ca = make_ca("test registry CA")
        cert = make_server_cert(ca, "127.0.0.1", ["127.0.0.1"])
        (tmp / "key.pem").write_bytes(cert.private)
        (tmp / "cert.pem").write_bytes(cert.public)
        self.ca_pem = ca.public
        self.b = Behaviour()
        b = self.b

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_GET(self) -> None:  # the token realm
                b.seen.append(("GET", self.path, self.headers.get("Authorization")))
                want = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                if self.headers.get("Authorization") != want:
                    self._send(401, {})
                    return
                self._send(200, {"Content-Type": "application/json"},
                           json.dumps({"token": "tok123"}).encode())

            def do_HEAD(self) -> None:
                auth = self.headers.get("Authorization")
                b.seen.append(("HEAD", self.path, auth))
                port = self.server.server_address[1]
                ok = {
                    "basic": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
                    "bearer": "Bearer tok123",
                }.get(b.auth)
                if b.auth == "weird":
                    self._send(401, {"WWW-Authenticate": 'Negotiate realm="x"'})
                    return
                if ok is not None and auth != ok:
                    challenge = (
                        'Basic realm="Registry Realm"' if b.auth == "basic" else
                        f'Bearer realm="https://127.0.0.1:{port}/token",'
                        'service="test",scope="repository:shop/web:pull"'
                    )
                    self._send(401, {"WWW-Authenticate": challenge})
                    return
                self._send(b.status, {"Docker-Content-Digest": b.digest}
                           if b.status == 200 else {})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(tmp / "cert.pem"), str(tmp / "key.pem"))
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.server = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    reg = Registry(tmp_path)
    certs_d = tmp_path / "certs.d"
    (certs_d / reg.server).mkdir(parents=True)
    (certs_d / reg.server / "ca.crt").write_bytes(reg.ca_pem)
    monkeypatch.setenv("DEPLOYER_DOCKER_CERTS_D", str(certs_d))
    yield reg
    reg.close()


def test_basic_auth_answers_the_challenge_once(registry: Registry) -> None:
    got = registry_api.manifest_digest(registry.server, "shop/web", "v1", USER, PASSWORD)
    assert got == DIGEST
    heads = [s for s in registry.b.seen if s[0] == "HEAD"]
    assert [h[1] for h in heads] == ["/v2/shop/web/manifests/v1"] * 2
    assert heads[0][2] is None and heads[1][2].startswith("Basic ")


def test_bearer_token_from_the_realm(registry: Registry) -> None:
    registry.b.auth = "bearer"
    got = registry_api.manifest_digest(registry.server, "shop/web", "v1", USER, PASSWORD)
    assert got == DIGEST
    token_get = [s for s in registry.b.seen if s[0] == "GET"]
    assert token_get and "service=test" in token_get[0][1] and "scope=repository" in token_get[0][1]


def test_wrong_password_means_ask_the_engine(registry: Registry) -> None:
    assert registry_api.manifest_digest(registry.server, "shop/web", "v1", USER, "nope") is None
    assert len([s for s in registry.b.seen if s[0] == "HEAD"]) == 2  # no retry loop


@pytest.mark.parametrize("change", ["missing tag", "bad digest", "unknown auth scheme"])
def test_answers_it_does_not_trust_mean_ask_the_engine(registry: Registry, change: str) -> None:
    if change == "missing tag":
        registry.b.auth, registry.b.status = "none", 404
    elif change == "bad digest":
        registry.b.auth, registry.b.digest = "none", "sha256:short"
    else:
        registry.b.auth = "weird"
    assert registry_api.manifest_digest(registry.server, "shop/web", "v1", USER, PASSWORD) is None


def test_untrusted_certificate_means_ask_the_engine(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other"
    (other / registry.server).mkdir(parents=True)
    (other / registry.server / "ca.crt").write_bytes(make_ca("someone else").public)
    monkeypatch.setenv("DEPLOYER_DOCKER_CERTS_D", str(other))
    registry.b.auth = "none"
    assert registry_api.manifest_digest(registry.server, "shop/web", "v1") is None
    assert registry.b.seen == []  # the handshake failed before any request


def test_docker_hub_and_unreachable_registries_go_to_the_engine() -> None:
    assert registry_api.manifest_digest(None, "library/nginx", "1.27") is None
    assert registry_api.manifest_digest("docker.io", "library/nginx", "1.27") is None
    assert registry_api.manifest_digest("127.0.0.1:1", "shop/web", "v1") is None
