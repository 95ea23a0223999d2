"""A reverse tunnel on the host's one SSH connection (``ssh -R``, in paramiko).

With ``registry: none`` the host's dockerd pulls from ``127.0.0.1:PORT``: sshd
listens there (loopback only) for as long as the tunnel is open, and each
connection dockerd makes arrives here as a channel of the SSH connection
deployer already holds, piped to the local image server. No second
connection, no credentials on the host, nothing left listening afterwards:
leaving :func:`reverse_tunnel` cancels the forward and closes every piped
connection (also on Ctrl-C: ``cancel`` cuts the pipes within half a second).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from deployer.errors import HostError

if TYPE_CHECKING:
    import paramiko

log = logging.getLogger("deployer.remote")

_CHUNK = 65536
_TICK = 0.5


class Tunnel:
    """An open reverse forward; ``sent`` counts the bytes sent to the host."""

    def __init__(self, cancel: threading.Event | None) -> None:
        self.sent = 0
        self.cancel = cancel or threading.Event()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._open: set[Any] = set()
        self._threads: list[threading.Thread] = []

    def _pipe(self, chan: paramiko.Channel, local: tuple[str, int]) -> None:
        try:
            sock = socket.create_connection(local, timeout=10)
        except OSError:
            chan.close()
            return
        sock.settimeout(None)
        with self._lock:
            self._open.update((chan, sock))
        try:
            while not (self._closing.is_set() or self.cancel.is_set()):
                ends: list[Any] = [sock, chan]
                ready = select.select(ends, [], [], _TICK)[0]
                if sock in ready:
                    data = sock.recv(_CHUNK)
                    if not data:
                        break
                    chan.sendall(data)
                    with self._lock:
                        self.sent += len(data)
                if chan in ready:
                    data = chan.recv(_CHUNK)
                    if not data:
                        break
                    sock.sendall(data)
        except (OSError, EOFError) as e:
            # Either side went away (a cut connection: paramiko raises
            # EOFError once its transport is gone). The pull fails and the
            # ship reports it; this thread ends quietly.
            log.debug("image tunnel closed: %s", type(e).__name__)
        finally:
            with self._lock:
                self._open.difference_update((chan, sock))
            with contextlib.suppress(Exception):
                chan.close()
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self, local: tuple[str, int]) -> Any:
        def handler(chan: paramiko.Channel, origin: object, server: object) -> None:
            # Called on paramiko's transport thread: never block it.
            t = threading.Thread(target=self._pipe, args=(chan, local), daemon=True,
                                 name="deployer-tunnel")
            with self._lock:
                self._threads = [x for x in self._threads if x.is_alive()] + [t]
            t.start()
        return handler

    def _close(self) -> None:
        self._closing.set()
        with self._lock:
            ends, threads = list(self._open), list(self._threads)
        for end in ends:
            with contextlib.suppress(Exception):
                end.close()
        for t in threads:
            t.join(timeout=2)


@contextlib.contextmanager
def reverse_tunnel(
    transport: paramiko.Transport,
    host: str,
    remote_port: int,
    local: tuple[str, int],
    cancel: threading.Event | None = None,
    step: str = "open image tunnel",
) -> Iterator[Tunnel]:
    """Forward ``127.0.0.1:remote_port`` on the host to ``local`` here, for
    the ``with`` block. A refused forward (``AllowTcpForwarding no``, the port
    taken) is a :class:`HostError` naming the port and what to do."""
    import paramiko

    tunnel = Tunnel(cancel)
    try:
        transport.request_port_forward("127.0.0.1", remote_port, handler=tunnel._accept(local))
    except (paramiko.SSHException, EOFError, OSError) as e:
        raise HostError(
            host, step,
            f"sshd refused a reverse tunnel on 127.0.0.1:{remote_port} ({e or type(e).__name__})",
            "allow it in the host's sshd_config (AllowTcpForwarding yes or remote), and "
            f"check that nothing else listens on port {remote_port} there",
        ) from None
    log.debug("%s: reverse tunnel 127.0.0.1:%d -> %s:%d", host, remote_port, *local)
    try:
        yield tunnel
    finally:
        with contextlib.suppress(Exception):
            transport.cancel_port_forward("127.0.0.1", remote_port)
        tunnel._close()
        log.debug("%s: reverse tunnel closed, %d bytes sent", host, tunnel.sent)
