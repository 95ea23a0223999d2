"""Where hosts pull from with ``registry: none``: a loopback address and port.

Pure and cheap (no Docker, no network): the loader and ``plan`` use it.

The port is fixed per app (derived from the app name), not picked per run:
it is part of every image reference rendered into the compose file, so a
per-run port would change the release fingerprint and no ship would ever be
``unchanged``. On each host, sshd listens there (loopback only) for as long
as the ship's reverse tunnel is open; dockerd allows plain HTTP to
``127.0.0.0/8`` registries, so no TLS and no registry credentials are needed.
"""

from __future__ import annotations

import zlib

HOST = "127.0.0.1"
# Below Linux's ephemeral range (32768-60999) and above the usual service
# ports, so the fixed port rarely collides with anything on a server.
PORT_BASE = 20000
PORT_SPAN = 2000


def loopback_port(app: str) -> int:
    """The port ``app``'s images are served on, on every host (stable)."""
    return PORT_BASE + zlib.crc32(app.encode()) % PORT_SPAN


def loopback_server(app: str) -> str:
    """``127.0.0.1:PORT``: the registry part of ``app``'s image references."""
    return f"{HOST}:{loopback_port(app)}"
