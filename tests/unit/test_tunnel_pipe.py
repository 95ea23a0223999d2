"""The reverse tunnel's pipe thread when the SSH connection is cut mid-copy.

CI caught it: paramiko raises EOFError (not an OSError) from ``sendall`` once
the transport is gone, and the pipe thread printed a traceback into the
user's output. The pull fails and is reported by the ship; the thread must
end quietly and close both ends."""

from __future__ import annotations

import socket
import threading
from typing import Any

from deployer.remote.tunnel import Tunnel


class CutChannel:
    """A channel whose transport died: every send raises EOFError."""

    def __init__(self) -> None:
        self.a, self.b = socket.socketpair()  # select() needs a real fd
        self.closed = False

    def fileno(self) -> int:
        return self.a.fileno()

    def sendall(self, data: bytes) -> None:
        raise EOFError()

    def recv(self, n: int) -> bytes:
        return b""

    def close(self) -> None:
        self.closed = True


def test_a_cut_connection_ends_the_pipe_without_a_traceback() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:  # the local image server: sends bytes at once
        conn, _ = server.accept()
        conn.sendall(b"x" * 1000)
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    raised: list[Any] = []
    old = threading.excepthook
    threading.excepthook = raised.append
    try:
        chan = CutChannel()
        t = threading.Thread(target=Tunnel(None)._pipe, args=(chan, ("127.0.0.1", port)))
        t.start()
        t.join(10)
    finally:
        threading.excepthook = old
        server.close()
    assert not t.is_alive()
    assert raised == []  # it used to escape: "Traceback ... EOFError" in the ship's output
    assert chan.closed
