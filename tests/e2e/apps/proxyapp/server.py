"""The proxy e2e app: ``/`` answers at once, ``/slow`` after 2 seconds (a
request in flight across the switch), both with the release's mounted config
(``version``) and the container that answered; ``/healthz`` is 200 or 503 as
the config's ``healthy`` says. ``ROLE`` names the service (web or api)."""

from __future__ import annotations

import json
import os
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONFIG = "/app/config.json"


def config() -> dict:
    with open(CONFIG) as fh:
        return json.load(fh)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        cfg = config()
        if self.path == "/healthz":
            code = 200 if cfg.get("healthy", True) else 503
            body: dict = {"status": "ok" if code == 200 else "unhealthy"}
        else:
            if self.path.startswith("/slow") or self.path.startswith("/api/slow"):
                time.sleep(2)
            code = 200
            body = {"version": cfg["version"], "role": os.environ.get("ROLE", "web"),
                    "served_by": socket.gethostname(), "path": self.path}
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
