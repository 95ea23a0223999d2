"""Ctrl-C, SIGTERM and SIGHUP during a run.

- The first signal (any of the three: CI systems cancel a job with SIGTERM
  or SIGHUP) sets ``cancel``: no new host and no new step starts; hosts at a
  safe point are reported ``skipped`` with their old release; hosts past the
  point of no return (``compose up``) finish their health gate and complete
  or roll back.
- The second sets ``abort``: hosts in flight stop waiting for health and are
  rolled back to their current release (the same health-gated restore as a
  failed gate); their locks are released; the run exits 130.
- The third exits at once (130), leaving the hosts as they are: the locks'
  leases end by themselves and the next ``ship`` recovers them.

Outside :func:`interruptible` (the image stage), :func:`as_keyboard_interrupt`
makes SIGTERM and SIGHUP raise ``KeyboardInterrupt`` as Ctrl-C does: nothing
on a host has changed yet.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

from deployer.errors import EXIT_INTERRUPTED

SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))

FIRST = ("\n{sig}: starting no more hosts; hosts in flight finish and deploy or roll back "
         "(Ctrl-C again: roll them back to their current release now, then exit)\n")
FIRST_NO_ABORT = "\n{sig}: stopping (Ctrl-C again: exit at once)\n"
SECOND = ("\n{sig} again: rolling the hosts in flight back to their current release, "
          "then exit (Ctrl-C once more: exit at once, leaving them as they are)\n")
LAST = "\n{sig} again: exiting now\n"


def _name(signum: int) -> str:
    with contextlib.suppress(ValueError):
        return signal.Signals(signum).name
    return f"signal {signum}"


@contextlib.contextmanager
def _handling(handler: signal.Handlers | object) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # A signal ignored on purpose stays ignored (SIGHUP under ``nohup``).
    previous = {s: signal.signal(s, handler)  # type: ignore[arg-type]
                for s in SIGNALS if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def interruptible(cancel: threading.Event,
                  abort: threading.Event | None = None) -> contextlib.AbstractContextManager[None]:
    """Inside, the signals set ``cancel``, then ``abort`` (when given; for
    commands that change nothing there is nothing to roll back), then exit
    at once. The previous handlers come back afterwards. Only in the main
    thread (elsewhere signals cannot be handled): a no-op there."""

    def handler(signum: int, frame: FrameType | None) -> None:
        sig = _name(signum)
        if not cancel.is_set():
            cancel.set()
            sys.stderr.write((FIRST if abort is not None else FIRST_NO_ABORT).format(sig=sig))
        elif abort is not None and not abort.is_set():
            abort.set()
            sys.stderr.write(SECOND.format(sig=sig))
        else:
            sys.stderr.write(LAST.format(sig=sig))
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)
        sys.stderr.flush()

    return _handling(handler)


def as_keyboard_interrupt() -> contextlib.AbstractContextManager[None]:
    """SIGTERM and SIGHUP raise ``KeyboardInterrupt`` like Ctrl-C does."""
    return _handling(signal.default_int_handler)
