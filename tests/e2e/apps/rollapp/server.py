"""The rollout test app: answers ``/`` with its mounted config (so a test can
tell which release a host serves) and ``/healthz`` with 200 or 503 as the
config's ``healthy`` says (so one host's var can break its healthcheck)."""

from __future__ import annotations

import json
import socket
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
            body = {"status": "ok" if code == 200 else "unhealthy"}
        else:
            code, body = 200, {**cfg, "served_by": socket.gethostname()}
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        print(f"{self.address_string()} {format % args}")


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
