"""The app behind nginx: counts visits in PostgreSQL.

``GET /api`` answers ``{"greeting", "visits", "database"}`` after counting
one visit; ``/healthz`` answers 200 once the database does.
"""

from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg


def connect() -> psycopg.Connection:
    return psycopg.connect(
        host=os.environ.get("DATABASE_HOST", "db"),
        dbname=os.environ["POSTGRES_DB"],
        user=os.environ["POSTGRES_USER"],
        password=os.environ["POSTGRES_PASSWORD"],
        connect_timeout=3,
        autocommit=True,
    )


class Handler(BaseHTTPRequestHandler):
    def _send(self, code: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        try:
            with connect() as conn:
                if self.path == "/healthz":
                    conn.execute("SELECT 1")
                    self._send(200, {"status": "ok"})
                    return
                conn.execute("CREATE TABLE IF NOT EXISTS visits (at timestamptz DEFAULT now())")
                conn.execute("INSERT INTO visits DEFAULT VALUES")
                row = conn.execute("SELECT count(*), version() FROM visits").fetchone()
        except psycopg.Error as e:
            self._send(503, {"error": type(e).__name__})
            return
        assert row is not None
        self._send(200, {"greeting": os.environ.get("APP_GREETING", ""),
                         "visits": row[0], "database": row[1]})

    def log_message(self, format: str, *args: object) -> None:
        print(f"{self.address_string()} {format % args}")


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
