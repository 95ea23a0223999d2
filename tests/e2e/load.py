"""The load client of the proxy tests, shared with bench/proxy.py: concurrent
HTTP clients against the proxy e2e app (tests/e2e/apps/proxyapp), each
request on its own connection, every answer recorded with its start and end.

By default per address: ``CLIENTS`` clients, two of them always in a
2-second ``/slow`` request (so requests are in flight at the moment of a
switch), the others on ``/`` back to back. The load stops by itself after
``MAX_LOAD_SECONDS`` at the latest.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass

PORT = 80
CLIENTS = 4  # per host: two in /slow (2 s each), two in / back to back
MAX_LOAD_SECONDS = 300  # the load stops by itself at the latest after this


@dataclass
class Answer:
    path: str
    start: float
    end: float
    status: int = 0
    version: str = ""
    served_by: str = ""
    role: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.error


def request(address: str, path: str, timeout: float = 15, port: int = PORT) -> Answer:
    a = Answer(path, time.monotonic(), 0.0)
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        r = conn.getresponse()
        body = r.read()
        a.status = r.status
        if r.status == 200:
            data = json.loads(body)
            a.version, a.served_by, a.role = data["version"], data["served_by"], data["role"]
        else:
            a.error = f"HTTP {r.status}: {body[:200]!r}"
    except Exception as e:  # a failed request is what the callers count
        a.error = f"{type(e).__name__}: {e}"
    finally:
        conn.close()
        a.end = time.monotonic()
    return a


class Load:
    """``clients`` concurrent clients per address (the first two on
    ``/slow``), from ``__enter__`` until ``__exit__`` (or ``max_seconds``,
    whichever comes first); ``settle`` seconds of load before the block runs
    and after it ends."""

    def __init__(self, addresses: list[str], *, port: int = PORT, clients: int = CLIENTS,
                 settle: float = 2.5, max_seconds: float = MAX_LOAD_SECONDS) -> None:
        self.addresses = addresses
        self.port = port
        self.clients = clients
        self.settle = settle
        self.max_seconds = max_seconds
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _client(self, address: str, path: str) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            a = request(address, path, port=self.port)
            with self._lock:
                self.answers.append(a)
            if path == "/" or not a.ok:
                time.sleep(0.02)

    def __enter__(self) -> Load:
        for address in self.addresses:
            for i in range(self.clients):
                t = threading.Thread(target=self._client,
                                     args=(address, "/slow" if i < 2 else "/"), daemon=True)
                t.start()
                self._threads.append(t)
        time.sleep(self.settle)  # every client has answers before the operation starts
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(self.settle)  # and after it ended
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in self._threads), "a load client hangs"

    # -- what the clients saw ------------------------------------------------

    def failed(self) -> list[Answer]:
        return [a for a in self.answers if not a.ok]

    def versions(self) -> set[str]:
        return {a.version for a in self.answers if a.ok}

    def assert_clean(self) -> None:
        bad = self.failed()
        assert not bad, f"{len(bad)} of {len(self.answers)} requests failed: {bad[:5]}"
        slow = [a for a in self.answers if a.path == "/slow"]
        assert len(slow) >= 4 and len(self.answers) >= 20, "the load did not run"

    def assert_switched_in_flight(self, old: str, new: str) -> None:
        """A 2-second request answered by ``old`` ended after one answered by
        ``new`` had started: it was in flight at the switch, and finished."""
        first_new = min(a.start for a in self.answers if a.ok and a.version == new)
        crossing = [a for a in self.answers if a.ok and a.path == "/slow"
                    and a.version == old and a.end > first_new]
        assert crossing, "no 2-second request was in flight across the switch"
        assert all(a.version == new for a in self.answers if a.start > max(
            a.end for a in crossing)), "the old release answered after the drain"
