"""``registry: none`` on one host: the image server, reached through the host's
own SSH connection, for as long as the host pulls.

The pull step of a ship wraps ``compose pull`` in :func:`images_to_host`:
the shared local server (:mod:`.serve`) runs, a reverse tunnel
(:mod:`deployer.remote.tunnel`) makes it the host's ``127.0.0.1:PORT``, and
both go away when the pull is done. With a registry it does nothing, and so
it does for an executor without an SSH transport (``plan``'s scripted host).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Project
    from ..remote.base import Executor
    from ..remote.tunnel import Tunnel


@contextmanager
def images_to_host(project: Project, ex: Executor, host: str,
                   cancel: threading.Event | None = None) -> Iterator[Tunnel | None]:
    """Serve ``project``'s images to ``host`` for the ``with`` block (yields the
    tunnel, whose ``sent`` counts the bytes; None when nothing is served)."""
    if not project.registry.none:
        yield None
        return
    transport = getattr(ex.connect(), "transport", None)
    if transport is None:
        yield None
        return
    from ..remote.tunnel import reverse_tunnel
    from .blobs import store_dir
    from .loopback import loopback_port
    from .serve import serving

    with serving(store_dir(project.root)) as server, reverse_tunnel(
        transport, host, loopback_port(project.app), server.address, cancel
    ) as tunnel:
        yield tunnel
