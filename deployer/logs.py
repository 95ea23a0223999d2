"""Logging set-up: debug logs on stderr, every line masked."""

from __future__ import annotations

import logging

from deployer.secrets import mask


class MaskingFilter(logging.Filter):
    """Masks secrets in the final message, whatever the call site passed."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask(record.getMessage())
        record.args = ()
        return True


class MaskingFormatter(logging.Formatter):
    """Masks the whole formatted record: the traceback of a library's
    exception can hold a secret the message did not."""

    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))


def setup_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(MaskingFilter())
    handler.setFormatter(MaskingFormatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger("deployer")
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("paramiko", "invoke", "fabric", "urllib3", "docker"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
