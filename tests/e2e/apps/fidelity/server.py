"""The compose-fidelity test app: answers ``/`` with what it read from each
kind of file compose gives it, so a test can tell that every one arrived.

- ``/app/conf/app.conf``: a conf file bind mount;
- ``/app/static/``: a static directory bind mount (``/static/<path>`` serves it);
- ``/data``: the data directory (``POST /visit`` counts in ``/data/visits``;
  ``/data/init.txt`` is written by the ``restart: "no"`` one-shot);
- ``APP_MODE``: from an ``env_file``; ``BUILD_GREETING``: a build arg baked in;
- ``/run/secrets/api_token``: a file secret.
"""

from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def state() -> dict[str, object]:
    static = Path("/app/static")
    return {
        "conf": read("/app/conf/app.conf"),
        "static": sorted(str(p.relative_to(static)) for p in static.rglob("*") if p.is_file())
        if static.is_dir() else None,
        "index": read("/app/static/index.html"),
        "visits": int(read("/data/visits") or 0),
        "init": read("/data/init.txt"),
        "app_mode": os.environ.get("APP_MODE"),
        "build_greeting": os.environ.get("BUILD_GREETING"),
        "secret": read("/run/secrets/api_token"),
    }


class Handler(BaseHTTPRequestHandler):
    def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._send(200, b'{"status": "ok"}')
        elif self.path.startswith("/static/"):
            p = (Path("/app/static") / self.path[len("/static/"):]).resolve()
            if Path("/app/static").resolve() in p.parents and p.is_file():
                self._send(200, p.read_bytes(), "application/octet-stream")
            else:
                self._send(404, b"{}")
        else:
            self._send(200, json.dumps(state()).encode())

    def do_POST(self) -> None:
        if self.path != "/visit":
            self._send(404, b"{}")
            return
        n = int(read("/data/visits") or 0) + 1
        Path("/data/visits").write_text(str(n))
        self._send(200, json.dumps({"visits": n}).encode())

    def log_message(self, format: str, *args: object) -> None:
        print(f"{self.address_string()} {format % args}")


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
