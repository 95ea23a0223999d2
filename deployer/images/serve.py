"""A read-only Docker Registry HTTP API v2, served by deployer itself.

With ``registry: none`` no registry runs anywhere: this server answers, in
deployer's own process and bound to the deploying machine's loopback, the few
requests a ``docker pull`` by digest makes, from the :class:`BlobStore`:

    GET|HEAD /v2/                               the API version check
    GET|HEAD /v2/<name>/manifests/sha256:<hex>  a stored manifest
    GET|HEAD /v2/<name>/blobs/sha256:<hex>      a stored layer or config (Range)

Anything else is 404 (an unknown tag or digest) or 405 (every write): it
cannot be pushed to and serves only content-addressed bytes deployer made.
Each host reaches it through a reverse tunnel on its own SSH connection
(:mod:`deployer.remote.tunnel`), so its dockerd pulls the layers it lacks and
nothing more. One server serves every host of a run, one thread per
connection, so a slow host does not hold back the others.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .blobs import MANIFEST_TYPE, BlobStore

log = logging.getLogger("deployer.images.serve")

_NAME = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
_PATH = re.compile(rf"^/v2/({_NAME})/(manifests|blobs)/(sha256:[0-9a-f]{{64}})$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
_CHUNK = 1 << 16


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s", format % args)

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None
              ) -> None:
        self.send_response(status)
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        body = json.dumps({"errors": [{"code": code, "message": message}]}).encode()
        self._send(status, body, {"Content-Type": "application/json"})

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/v2", "/v2/"):
            self._send(200, b"{}", {"Content-Type": "application/json"})
            return
        m = _PATH.match(path)
        if not m:
            self._error(404, "NAME_UNKNOWN", "only manifests and blobs by digest are served")
            return
        kind, digest = m.group(2), m.group(3)
        store = self.server.store
        if kind == "manifests":
            file = store.manifest_path(digest)
            if not file.is_file():
                self._error(404, "MANIFEST_UNKNOWN", f"manifest {digest} unknown")
                return
            self._send(200, file.read_bytes(),
                       {"Content-Type": MANIFEST_TYPE, "Docker-Content-Digest": digest})
            return
        self._blob(store.blob_path(digest), digest)

    def _blob(self, file: Path, digest: str) -> None:
        try:
            f = file.open("rb")
        except OSError:
            self._error(404, "BLOB_UNKNOWN", f"blob {digest} unknown")
            return
        with f:
            size = file.stat().st_size
            start, end = 0, size - 1
            status = 200
            rng = _RANGE.match(self.headers.get("Range", ""))
            if rng:
                start = int(rng.group(1))
                end = min(int(rng.group(2)), size - 1) if rng.group(2) else size - 1
                if start > end:
                    self._send(416, b"", {"Content-Range": f"bytes */{size}"})
                    return
                status = 206
            self.send_response(status)
            self.send_header("Docker-Distribution-API-Version", "registry/2.0")
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Docker-Content-Digest", digest)
            self.send_header("Content-Length", str(end - start + 1))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if self.command == "HEAD":
                return
            f.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = f.read(min(_CHUNK, left))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)

    def _refuse(self) -> None:
        self._error(405, "UNSUPPORTED", "this registry is read-only")

    do_POST = do_PUT = do_PATCH = do_DELETE = _refuse


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, store: BlobStore) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.store = store

    def handle_error(self, request: object, client_address: object) -> None:
        # A host that goes away mid-blob (a cut SSH connection) is normal.
        log.debug("image server: connection from %s ended with an error", client_address,
                  exc_info=True)


class ImageServer:
    """The running server: ``address`` is the local ``(host, port)`` to forward to."""

    def __init__(self, store: BlobStore) -> None:
        self._server = _Server(store)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.2},
                                        name="deployer-image-server", daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


_lock = threading.Lock()
_shared: dict[Path, tuple[ImageServer, int]] = {}


@contextmanager
def serving(root: Path) -> Iterator[ImageServer]:
    """The one server for the store at ``root``, started on first use and
    stopped when its last user leaves (hosts ship in parallel and share it)."""
    key = root.resolve()
    with _lock:
        server, users = _shared.get(key, (None, 0))
        if server is None:
            server = ImageServer(BlobStore(key))
        _shared[key] = (server, users + 1)
    try:
        yield server
    finally:
        with _lock:
            server, users = _shared[key]
            if users == 1:
                del _shared[key]
                server.close()
            else:
                _shared[key] = (server, users - 1)
