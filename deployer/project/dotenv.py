"""The project's ``.env``, read the way compose reads it.

compose loads ``.env`` from the project folder (next to the compose file) for
``${VAR}`` interpolation, the process environment winning. The syntax is
compose's (``compose-go/dotenv``): ``KEY=VALUE``, an optional ``export``,
``#`` comments (inline only after whitespace in unquoted values), single
quotes literal, double quotes with ``\\n``/``\\"`` escapes and spanning lines,
and ``${VAR}`` in unquoted or double-quoted values resolved from the keys
above and the environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from deployer.errors import ConfigError
from deployer.project.interpolate import Lookup, substitute

DOTENV = ".env"
_KEY = re.compile(r"[A-Za-z0-9_.-]+")


def parse_dotenv(
    text: str, display: str, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Parse dotenv ``text``; ``display`` names the file in errors."""
    out: dict[str, str] = {}
    env = environ or {}

    def lookup(name: str) -> str | None:
        return env.get(name, out.get(name))

    lines = text.removeprefix("\ufeff").splitlines()
    i = 0
    while i < len(lines):
        n = i + 1
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:].lstrip()
        key, sep, val = line.partition("=")
        key = key.strip()
        if not _KEY.fullmatch(key):
            raise ConfigError(f"{display}:{n}: expected KEY=VALUE", "fix or remove that line")
        if not sep:
            # compose: a bare KEY takes its value from the environment, if any.
            if key in env:
                out[key] = env[key]
            continue
        val = val.lstrip()
        if val[:1] in ("'", '"'):
            q = val[0]
            body = val[1:]
            while not _closed(body, q) and i < len(lines):
                body += "\n" + lines[i]
                i += 1
            if not _closed(body, q):
                raise ConfigError(f"{display}:{n}: unterminated {q}quoted value for {key}")
            end = _close_index(body, q)
            inner = body[:end]
            if q == "'":
                out[key] = inner
            else:
                inner = (
                    inner.replace("\\n", "\n").replace("\\t", "\t").replace('\\"', '"')
                    .replace("\\\\", "\\")
                )
                out[key] = _expand(inner, lookup, display, n)
            continue
        val = re.sub(r"\s+#.*$", "", val).rstrip()
        out[key] = _expand(val, lookup, display, n)
    return out


def _close_index(body: str, q: str) -> int:
    j = 0
    while j < len(body):
        if body[j] == "\\" and q == '"':
            j += 2
            continue
        if body[j] == q:
            return j
        j += 1
    return -1


def _closed(body: str, q: str) -> bool:
    return _close_index(body, q) >= 0


def _expand(val: str, lookup: Lookup, display: str, n: int) -> str:
    if "$" not in val:
        return val
    try:
        return substitute(val, lookup)
    except ValueError as e:
        raise ConfigError(f"{display}:{n}: {e}") from None


def read_dotenv(
    path: Path, display: str, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``path`` parsed as dotenv, or ``{}`` when there is no such file. A FIFO,
    device or directory is a ConfigError, never a hang (config/readfile.py)."""
    from deployer.config.readfile import read_text

    if not os.path.lexists(path):
        return {}
    text = read_text(path, display, ".env", limit=1024 * 1024)
    return parse_dotenv(text, display, environ)
