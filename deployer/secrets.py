"""Secret values and the masking of them in every output.

A value that came from ``${VAR}`` (environment or secrets_file) is wrapped in
:class:`Secret` by the config loader. Secrets render to their real value only
where they must (rendered files, stdin of ``docker login``); everywhere else
(plan output, logs, reports, error messages) a :class:`Masker` replaces every
known secret value with ``******``. The masker is process-wide because
secrets reach output from many places (exceptions, remote stderr, logs) and
one forgotten call site is one leaked password.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

MASK = "******"


class Secret(str):
    """A string that is a secret. It behaves as ``str`` (so templates can use
    it), but its ``repr`` is masked so it never leaks through debug output."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    @property
    def value(self) -> str:
        return str.__str__(self)


class Masker:
    """Replaces every registered secret value in text with ``******``."""

    # Values this short would mask ordinary words; they are still never printed
    # by deployer itself, but we do not scrub arbitrary remote output for them.
    MIN_LEN = 3

    def __init__(self) -> None:
        self._values: set[str] = set()
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
                if v not in self._values:
                    self._values.add(v)
                    new.append(v)
            listeners = list(self._listeners)
        # Called before add() returns, so before the value can reach any output
        # (GitHub Actions needs its ::add-mask:: before the value is printed).
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

    def add_all(self, values: Iterable[str]) -> None:
        for v in values:
            self.add(v)

    @property
    def values(self) -> list[str]:
        with self._lock:
            return sorted(self._values, key=len, reverse=True)

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


masker = Masker()


def mask(text: str) -> str:
    """Mask every known secret in ``text`` (the process-wide masker)."""
    return masker.mask(text)
