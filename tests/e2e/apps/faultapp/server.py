"""The fault suite's app (tests/e2e/test_faults.py), one image for three
services:

- ``web`` and ``side`` (``server.py web|side``) answer ``/`` with the mounted
  config, the release id in it, so a test can tell which release each
  serves; ``/healthz`` is 200 or 503 as the config's ``healthy`` says;
- ``migrate`` (``server.py migrate``), a one-shot, exits 0, or 1 when the
  config's ``migrate_ok`` is false.

SIGTERM ends the process at once (python as PID 1 would ignore it), so a
container stops without compose's 10 s grace and a dockerd restart is quick.
"""

from __future__ import annotations

import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONFIG = "/app/config.json"


def config() -> dict:
    with open(CONFIG) as fh:
        return json.load(fh)


class Handler(BaseHTTPRequestHandler):
    role = "web"

    def do_GET(self) -> None:
        cfg = config()
        if self.path == "/healthz":
            code = 200 if cfg.get("healthy", True) else 503
            body = {"status": "ok" if code == 200 else "unhealthy"}
        else:
            code, body = 200, {**cfg, "role": self.role}
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main(role: str) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if role == "migrate":
        ok = config().get("migrate_ok", True)
        print("migrations applied" if ok else "migration 0042 failed: column exists")
        return 0 if ok else 1
    Handler.role = role
    ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "web"))
