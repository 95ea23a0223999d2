"""Secret values and the masking of them in every output.

The rule: every value that comes from the environment or the secrets file
through ``${VAR}`` is a secret, and so is anything a template derives from one.

A value that came from ``${VAR}`` (environment or secrets_file) is wrapped in
:class:`Secret` by the config loader. Secrets render to their real value only
where they must (rendered files, stdin of ``docker login``); everywhere else
(plan output, logs, reports, error messages) a :class:`Masker` replaces every
known secret value with ``******``. The masker is process-wide because
secrets reach output from many places (exceptions, remote stderr, logs) and
one forgotten call site is one leaked password.

A secret reaches output in other spellings than its own: JSON-escaped (plan
``-o json``, ``| tojson``), shell-quoted (a command line), URL-encoded (a
database URL), base64 (a docker ``config.json``), HTML-escaped, Python
``repr``. :meth:`Masker.add` registers each of those spellings too. Values
shorter than :data:`MIN_SECRET_LEN` cannot be masked without masking ordinary
words, so the config loader refuses them (:func:`too_short`).
"""

from __future__ import annotations

import base64
import contextvars
import html
import json
import shlex
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

MASK = "******"
MIN_SECRET_LEN = 4


def too_short(value: str) -> bool:
    """A non-empty secret too short to be masked safely (an error in ``check``)."""
    return 0 < len(value) < MIN_SECRET_LEN


def _base64_cores(data: bytes) -> list[str]:
    """The part of the base64 of ``data`` that does not depend on what comes
    before or after it, for each of the three alignments it can have inside a
    longer encoded text (``user:password`` in a docker config)."""
    out = []
    n = len(data)
    for off in range(3):
        enc = base64.b64encode(b"\0" * off + data).decode()
        # character j covers bits [6j, 6j+6); the value covers [8off, 8(off+n))
        first = -(-8 * off // 6)
        last = (8 * (off + n)) // 6  # exclusive
        core = enc[first:last]
        if len(core) >= 6:
            out += [core, core.replace("+", "-").replace("/", "_")]
    return out


def spellings(value: str) -> list[str]:
    """``value`` and the encodings in which it can reach output."""
    js = json.dumps(value)[1:-1]
    out = [
        value,
        js,
        json.dumps(value, ensure_ascii=False)[1:-1],
        # jinja's | tojson (htmlsafe_json_dumps)
        js.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        .replace("'", "\\u0027"),
        repr(value)[1:-1],
        shlex.quote(value),
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote(value),
        urllib.parse.quote_plus(value),
        html.escape(value),
        html.escape(value, quote=False),
    ]
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError:
        raw = value.encode("utf-8", "surrogatepass")
    out += _base64_cores(raw)
    seen: list[str] = []
    for v in out:
        if len(v) >= MIN_SECRET_LEN and v not in seen:
            seen.append(v)
    return seen


# Set while a template renders (deployer/jinja_env.py): called with the length
# of a piece cut from a Secret that is too short to mask; it raises.
short_piece_guard: contextvars.ContextVar[Callable[[int], None] | None] = (
    contextvars.ContextVar("short_piece_guard", default=None)
)


class Secret(str):
    """A string that is a secret. It behaves as ``str`` (so templates can use
    it), but its ``repr`` is masked so it never leaks through debug output.

    A slice of it is a Secret too, registered with the masker; inside a
    template a piece too short to mask (``pw[0]``), or iterating over it
    character by character, is an error."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __getitem__(self, key: Any) -> str:
        piece = str.__getitem__(self, key)
        if len(piece) >= MIN_SECRET_LEN:
            masker.add(piece)
            return Secret(piece)
        guard = short_piece_guard.get()
        if guard is not None and piece.strip():
            guard(len(piece))
        return piece

    def __iter__(self) -> Iterator[str]:
        guard = short_piece_guard.get()
        if guard is not None and len(self):
            guard(1)
        return str.__iter__(self)

    @property
    def value(self) -> str:
        return str.__str__(self)


class Masker:
    """Replaces every registered secret value in text with ``******``."""

    # Values this short would mask ordinary words; the config loader refuses
    # such secrets (too_short), so only derived pieces can be this short.
    MIN_LEN = MIN_SECRET_LEN

    def __init__(self) -> None:
        self._values: set[str] = set()  # every spelling, for mask()
        self._originals: set[str] = set()  # the values as registered, for listeners
        self._lock = threading.Lock()
        self._listeners: list[Callable[[str], None]] = []

    def add(self, value: str) -> None:
        value = str.__str__(value)
        if len(value) < self.MIN_LEN:
            return
        new: list[str] = []
        with self._lock:
            # A multi-line secret (a key) may be printed line by line.
            lines = [ln.strip() for ln in value.splitlines() if len(ln.strip()) >= 8]
            for v in (value, *lines):
                if v not in self._originals:
                    self._originals.add(v)
                    new.append(v)
            self._values.update((*spellings(value), *lines))
            listeners = list(self._listeners)
        # Called before add() returns, so before the value can reach any output
        # (GitHub Actions needs its ::add-mask:: before the value is printed).
        # Listeners get the value (and its long lines), not its other spellings:
        # the GitHub runner derives the encoded forms itself.
        for fn in listeners:
            for v in new:
                fn(v)

    def subscribe(self, fn: Callable[[str], None]) -> Callable[[], None]:
        """Call ``fn(value)`` for every value registered from now on; returns
        the function that unsubscribes it."""
        with self._lock:
            self._listeners.append(fn)

        def unsubscribe() -> None:
            with self._lock:
                if fn in self._listeners:
                    self._listeners.remove(fn)

        return unsubscribe

    @property
    def values(self) -> list[str]:
        """Every spelling of every secret, longest first."""
        with self._lock:
            return sorted(self._values, key=len, reverse=True)

    @property
    def originals(self) -> list[str]:
        """The values as registered (and the long lines of multi-line ones)."""
        with self._lock:
            return sorted(self._originals)

    def mask(self, text: str) -> str:
        if not text:
            return text
        for v in self.values:  # longest first, so a secret containing another is masked whole
            if v in text:
                text = text.replace(v, MASK)
        return text

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._originals.clear()


masker = Masker()


def mask(text: str) -> str:
    """Mask every known secret in ``text`` (the process-wide masker)."""
    return masker.mask(text)


def mask_data(data: Any) -> Any:
    """A copy of JSON-like ``data`` with every string (keys too) masked."""
    if isinstance(data, str):
        return masker.mask(str.__str__(data))
    if isinstance(data, dict):
        return {mask_data(k) if isinstance(k, str) else k: mask_data(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [mask_data(v) for v in data]
    return data


def dumps_masked(data: Any, indent: int | None = 2, **kw: Any) -> str:
    """``json.dumps`` of :func:`mask_data`: masked before serialising, so no
    escaped spelling of a secret can slip through, and the JSON stays valid."""
    return json.dumps(mask_data(data), indent=indent, **kw)
