"""A paramiko Transport that never sends a channel message after the channel's CLOSE.

paramiko's ``Channel.send`` checks ``closed`` under the channel's lock,
releases it, and only then hands the DATA message to the transport; a CLOSE
for the same channel (ours, or our answer to the server's, sent by the
transport's own thread) can go out in between. OpenSSH frees a channel once
both CLOSEs have crossed, and a DATA packet for a channel it no longer knows
makes it drop the whole connection ("data packet referred to nonexistent
channel"). With a shared bastion this cascades (issue 19): a command that
exits before reading all its stdin loses that race on the target's
connection, the target's sshd disconnects, the bastion closes that target's
direct-tcpip channel while the target's transport is still writing into it,
and the bastion's sshd then drops the one connection every other target
goes through.

Every message a transport sends passes through ``Transport._send_message``,
in order, so that is where the rule is kept: a channel message for a remote
channel id whose CLOSE was already sent is dropped, and the check and the
send happen under one lock. A server reuses a freed id only for a channel
opened later; the id is forgotten when such a channel is confirmed (ours) or
opened (the server's, e.g. a reverse tunnel's connection).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger("deployer.remote")

# RFC 4254 channel messages that carry the recipient's channel id first:
# WINDOW_ADJUST 93, DATA 94, EXTENDED_DATA 95, EOF 96, CLOSE 97, REQUEST 98,
# SUCCESS 99, FAILURE 100.
_FIRST, _LAST, _CLOSE = 93, 100, 97

_BUILD = threading.Lock()
_CLASS: Any = None


def transport_class() -> Any:
    """The paramiko ``Transport`` subclass (built on first use: paramiko is
    imported only on paths that connect)."""
    global _CLASS
    with _BUILD:
        if _CLASS is None:
            _CLASS = _build()
    return _CLASS


def _build() -> Any:
    import paramiko

    # Untyped on purpose: the methods overridden are paramiko internals the
    # type stubs do not declare (the same in paramiko 3.4 and 5.1).
    base: Any = paramiko.Transport

    class ClosedChannelSafeTransport(base):
        """See the module docstring. ``dropped`` counts the messages it held back."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._close_sent: set[int] = set()
            self._order = threading.Lock()
            self.dropped = 0

        def _send_message(self, data: Any) -> None:
            raw = data.asbytes()
            if len(raw) < 5 or not _FIRST <= raw[0] <= _LAST:
                super()._send_message(data)
                return
            remote = int.from_bytes(raw[1:5], "big")
            with self._order:
                if remote in self._close_sent:
                    self.dropped += 1
                    log.debug("ssh: dropped a message (type %d) for channel %d after its "
                              "CLOSE", raw[0], remote)
                    return
                if raw[0] == _CLOSE:
                    self._close_sent.add(remote)
                super()._send_message(data)

        def _forget(self, remote: int) -> None:
            with self._order:
                self._close_sent.discard(remote)

        def _parse_channel_open_success(self, m: Any) -> None:
            raw = m.asbytes()  # our id, then the server's
            if len(raw) >= 8:
                self._forget(int.from_bytes(raw[4:8], "big"))
            super()._parse_channel_open_success(m)

        def _parse_channel_open(self, m: Any) -> None:
            raw = m.asbytes()  # the kind (a string), then the server's id
            if len(raw) >= 4:
                at = 4 + int.from_bytes(raw[:4], "big")
                if len(raw) >= at + 4:
                    self._forget(int.from_bytes(raw[at:at + 4], "big"))
            super()._parse_channel_open(m)

    return ClosedChannelSafeTransport
