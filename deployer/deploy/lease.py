"""The run's identity in deploy locks, and the lease that keeps them.

Every deployer invocation gets a fresh random :data:`RUN` id; the locks it
takes record it (with the machine and pid), and only that run may renew or
release them. While a run holds a host's lock, a :class:`Renewer` thread
extends the lease every third of its length over the host's existing
connection. A run killed with ``kill -9`` stops renewing, so the next run may
take the lock over once the lease has passed on the host's clock
(:mod:`deployer.commands.lock`).

The lease length is :data:`DEFAULT_LEASE` seconds; ``DEPLOYER_LOCK_LEASE``
(seconds, :data:`MIN_LEASE` to :data:`MAX_LEASE`) overrides it, e.g. for a CI runner
that must recover quickly after a killed job.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

from deployer.commands import lock
from deployer.errors import ConfigError, HostError
from deployer.remote.base import Executor

log = logging.getLogger(__name__)

DEFAULT_LEASE = 60
MIN_LEASE = 3
MAX_LEASE = 86400  # a day; the host's shell does the arithmetic in 64 bits
LEASE_ENV = "DEPLOYER_LOCK_LEASE"


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: this invocation of deployer."""

    run: str
    machine: str
    pid: int


RUN = Holder(secrets.token_hex(6), socket.gethostname(), os.getpid())


def lease_seconds(environ: dict[str, str] | None = None) -> int:
    """The lease of the locks a ship or rollback takes (``DEPLOYER_LOCK_LEASE``)."""
    raw = (os.environ if environ is None else environ).get(LEASE_ENV, "").strip()
    if not raw:
        return DEFAULT_LEASE
    if not raw.isdigit() or not MIN_LEASE <= int(raw) <= MAX_LEASE:
        raise ConfigError(f"{LEASE_ENV}={raw[:20]!r} is not a whole number of seconds "
                          f"from {MIN_LEASE} to {MAX_LEASE}",
                          f"unset it for the default of {DEFAULT_LEASE}s")
    return int(raw)


def lock_hint(info: lock.LockInfo, env: str) -> str:
    """What to do about a lock another run holds, for the failed host's line."""
    if info.lease_end is None:
        return f"; run `deployer unlock {env}` if that deploy is dead"
    return ("; if that run is dead, its lock is taken over once the lease ends: "
            "ship again then")


class Renewer:
    """Extends the lease of ``run``'s lock on one host every ``lease / 3``
    seconds until :meth:`stop`. ``on_lost`` is told once if the lock is gone
    or another run holds it (the lease had passed: the host was unreachable
    for that long)."""

    def __init__(self, ex: Executor, deploy_dir: str, run: str, lease: int,
                 on_lost: Callable[[lock.LockInfo], None]) -> None:
        self.ex = ex
        self.command = lock.renew(deploy_dir, run, lease)
        self.every = lease / 3
        # A renewal slower than a third of the lease (a loaded host) is still
        # worth waiting for; one slower than the lease is too late anyway.
        self.timeout = float(lease)
        self.on_lost = on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease {ex.host}", daemon=True)

    def start(self) -> Renewer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def renew_once(self) -> bool:
        """One renewal; False when the lock is lost (then ``on_lost`` was told)."""
        try:
            res = self.ex.run(self.command, check=False, timeout=self.timeout)
        except HostError as e:  # unreachable for now: the next tick tries again
            log.debug("%s: lease renewal failed: %s", self.ex.host, e.message)
            return True
        if res.exit_code == lock.EXIT_LOCKED:
            self.on_lost(lock.parse_lock_info(res.stdout))
            return False
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            if not self.renew_once():
                return
