"""Reading a user's file (YAML, dotenv, template) without hanging or crashing.

Where deployer expects a file, the path may name a directory, a FIFO (whose
``open`` blocks until a writer appears: a hang), a device (``/dev/zero`` never
ends), an unreadable file or bytes that are not UTF-8. Every such case is one
:class:`~deployer.errors.ConfigError` naming the file and what to do. FIFOs
are opened non-blocking and refused from ``fstat``, before any read; regular
files are read up to a size cap.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from deployer.errors import ConfigError

# Generous for configuration and templates; a bigger one is almost certainly a
# mistake (a log, a dump, a device) and would be rendered per host.
MAX_BYTES = 4 * 1024 * 1024
MAX_PATH = 4096


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def read_bytes(path: Path | str, display: str, what: str = "file",
               limit: int = MAX_BYTES) -> bytes:
    """The content of the regular file ``path`` (at most ``limit`` bytes).

    ``display`` is how messages name it (as the user wrote it); ``what`` says
    what it is for (``secrets_file``, ``template``).
    """
    p = os.fspath(path)
    if not p:
        raise ConfigError(f"{what}: the path is empty", f"set {what} to a file path")
    if len(p) > MAX_PATH or "\0" in p:
        raise ConfigError(
            f"{what} {_short(display)}: not a usable path "
            f"({'contains NUL' if chr(0) in p else f'{len(p)} characters long'})",
            f"give {what} a normal file path",
        )
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ConfigError(
            f"{display}: {what} not found", f"create it, or fix the {what} path"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{display}: {what} is a directory", f"point {what} at a file") from None
    except PermissionError:
        raise ConfigError(
            f"{display}: {what} is not readable (permission denied)",
            "make it readable by the user running deployer",
        ) from None
    except OSError as e:
        reason = "path too long" if e.errno == errno.ENAMETOOLONG else (e.strerror or str(e))
        raise ConfigError(f"{_short(display)}: cannot open {what}: {reason}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(
                f"{display}: {what} is {_kind(st.st_mode)}, not a regular file",
                f"point {what} at a regular file",
            )
        if st.st_size > limit:
            raise ConfigError(
                f"{display}: {what} is {st.st_size} bytes, more than the limit of {limit}",
                "is it the right file?",
            )
        chunks: list[bytes] = []
        total = 0
        while True:
            try:
                b = os.read(fd, 65536)
            except OSError as e:
                raise ConfigError(f"{display}: cannot read {what}: {e.strerror or e}") from None
            if not b:
                break
            total += len(b)
            if total > limit:  # it grew while we read
                raise ConfigError(f"{display}: {what} is more than {limit} bytes")
            chunks.append(b)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(path: Path | str, display: str, what: str = "file",
              limit: int = MAX_BYTES) -> str:
    """:func:`read_bytes`, decoded as UTF-8 (an error names the line)."""
    data = read_bytes(path, display, what, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(
            f"{display}:{line}: {what} is not valid UTF-8 (byte {data[e.start]:#04x})",
            "save the file as UTF-8",
        ) from None


def _short(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."
