"""``${VAR}`` interpolation from the environment and the secrets file.

Every value taken from the environment or the secrets file is a secret by
definition (that is how users keep passwords out of the repository), so it is
wrapped in :class:`Secret` and registered with the masker before anything is
printed. A ``${VAR:-default}`` that falls back to its default is not: the
default is written in the repository for all to read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deployer.config.yamlfile import Loc, SourceMap
from deployer.errors import ConfigError
from deployer.secrets import MIN_SECRET_LEN, Secret, masker, too_short

# ${NAME}, ${NAME:-default} (unset or empty), ${NAME-default} (unset),
# ${NAME:?message} / ${NAME?message} (required, as in compose); $$ is a literal $.
PATTERN = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$\{([^}]*)\}?")


def interpolate(data: Any, env: Mapping[str, str], smap: SourceMap, hint: str) -> Any:
    """Return ``data`` with every ``${VAR}`` in string values replaced."""
    return _walk(data, (), env, smap, hint)


def _walk(value: Any, loc: Loc, env: Mapping[str, str], smap: SourceMap, hint: str) -> Any:
    if isinstance(value, dict):
        return {k: _walk(v, (*loc, k), env, smap, hint) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, (*loc, i), env, smap, hint) for i, v in enumerate(value)]
    if isinstance(value, str) and "$" in value:
        return _substitute(value, loc, env, smap, hint)
    return value


def _substitute(text: str, loc: Loc, env: Mapping[str, str], smap: SourceMap, hint: str) -> str:
    used = False

    def repl(m: re.Match[str]) -> str:
        nonlocal used
        if m.group(0) == "$$":
            return "$"
        if m.group(4) is not None or m.group(1) is None:
            raise ConfigError(
                f"{smap.where(loc)}: {_key(loc)}: malformed variable reference {m.group(0)!r}",
                "write ${NAME} or ${NAME:-default}; use $$ for a literal $",
            )
        name, op, default = m.group(1), m.group(2), m.group(3)
        val = env.get(name)
        if (op == ":-" and not val) or (op == "-" and val is None):
            # A default is written in the repository, so it is not a secret.
            return default
        if op in (":?", "?") and ((op == ":?" and not val) or val is None):
            raise ConfigError(
                f"{smap.where(loc)}: {_key(loc)}: environment variable {name} is required"
                + (f": {default}" if default else ""),
                f"export {name}=... {hint}",
            )
        if val is None:
            raise ConfigError(
                f"{smap.where(loc)}: {_key(loc)}: environment variable {name} is not set",
                f"export {name}=... {hint}",
            )
        if too_short(val):
            raise ConfigError(
                f"{smap.where(loc)}: {_key(loc)}: the value of {name} is {len(val)} "
                f"character{'s' if len(val) > 1 else ''} long: too short to be masked in output",
                f"a secret needs at least {MIN_SECRET_LEN} characters; use a longer {name}",
            )
        used = True
        masker.add(val)
        return val

    out = PATTERN.sub(repl, text)
    return Secret(out) if used else out


# deployer.sandbox.model.SANDBOX_REL (not imported: config stays free of the
# sandbox); a unit test keeps the two equal.
SANDBOX_DIR = (".deployer", "sandbox")


def missing_hint(inventory: str, secrets_file: str | None, dotenv: str | None = None) -> str:
    """Where an unset ``${VAR}`` can come from, for ``export VAR=... <hint>``:
    the environment (or compose's ``.env``, when the project has one), or this
    environment's secrets file. Names the inventory's ``secrets_file`` and
    says what it is for, or suggests setting one; never suggests a file that
    ``deployer sandbox`` owns."""
    env = f"in the environment or in {dotenv}" if dotenv else "in the environment"
    if secrets_file is None:
        return (f"{env}, or add it to a dotenv file of this environment's "
                f"secrets (KEY=VALUE lines) and name that file in {inventory} as "
                f"`secrets_file: .deployer/<env>.env` (the environment wins over it)")
    if Path(secrets_file).parts[:2] == SANDBOX_DIR:
        return (f"{env}: {inventory}'s secrets_file {secrets_file} belongs to "
                f"`deployer sandbox` (its registry password; `sandbox down` deletes it)")
    return (f"{env}, or add it to {secrets_file}, the secrets_file of "
            f"{inventory}: a dotenv file of secrets for this environment (KEY=VALUE lines; "
            f"the environment wins over it)")


def _key(loc: Loc) -> str:
    return ".".join(str(p) for p in loc) or "(top)"


def read_dotenv(path: Path, display: str) -> dict[str, str]:
    """A secrets_file: ``KEY=VALUE`` lines, ``export`` prefix, ``#`` comments,
    single or double quotes. Deliberately not compose's dotenv syntax
    (:mod:`deployer.project.dotenv`): values are literal, with no ``${VAR}``
    expansion, so a password holding ``$`` arrives as written.
    A directory, FIFO, device, oversized, unreadable or non-UTF-8 file is a
    ConfigError (never a hang: see :mod:`deployer.config.readfile`)."""
    from deployer.config.readfile import read_text

    return parse_dotenv(read_text(path, display, "secrets_file", limit=1024 * 1024), display)


def parse_dotenv(text: str, display: str) -> dict[str, str]:
    """The ``KEY=VALUE`` lines of :func:`read_dotenv`'s syntax; a bad line is
    a ConfigError naming ``display:line`` (never its content: it may be a
    secret)."""
    out: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:].lstrip()
        key, sep, val = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ConfigError(f"{display}:{n}: expected KEY=VALUE", "fix or remove that line")
        val = val.strip()
        if len(val) >= 2 and val[0] == val[-1] and val[0] in "'\"":
            val = val[1:-1]
            if raw.strip().split("=", 1)[1].strip()[0] == '"':
                val = val.replace("\\n", "\n").replace('\\"', '"')
        else:
            val = re.sub(r"\s+#.*$", "", val)
        out[key] = val
    return out
