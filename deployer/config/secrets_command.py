"""``secrets_command:``: secrets from a manager (sops, 1Password, Vault, ...).

An inventory's ``secrets_command`` is an argv (never a shell string) whose
stdout is dotenv (``KEY=VALUE`` lines, as a ``secrets_file``), or a JSON
object of strings (also Vault's ``kv get -format=json``, whose values sit
under ``data.data`` or ``data``). It runs in the project folder at most once
per invocation, and only when a ``${VAR}`` is not set in the environment:
the environment wins over it, and it wins over the ``secrets_file``.

Every value it prints is a secret: registered with the masker as soon as the
command returns, so its own stderr, and everything after, prints masked.
A command that is missing, fails, times out or prints something else is one
:class:`~deployer.errors.ConfigError` (exit 2) naming the command and its
stderr, masked.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

from deployer.errors import ConfigError
from deployer.secrets import masker

#: A manager may ask for a touch or a password on the terminal; longer than
#: that is a hang.
TIMEOUT = 300.0
MAX_OUTPUT = 1024 * 1024


def check_argv(value: object, where: str) -> list[str]:
    """``secrets_command`` as written: a non-empty list of non-empty strings."""
    if isinstance(value, str):
        raise ConfigError(
            f"{where}: secrets_command must be a list (an argv), not a shell string",
            'write it as a YAML list, e.g. secrets_command: [sops, -d, secrets/prod.env]',
        )
    if (not isinstance(value, list) or not value
            or not all(isinstance(a, str) and a for a in value)):
        raise ConfigError(
            f"{where}: secrets_command must be a non-empty list of strings",
            'e.g. secrets_command: [sops, -d, secrets/prod.env]',
        )
    return list(value)


def _shown(argv: list[str]) -> str:
    import shlex

    return masker.mask(shlex.join(argv))


def run_secrets_command(argv: list[str], cwd: Path, environ: Mapping[str, str],
                        where: str) -> dict[str, str]:
    """Run ``argv`` in ``cwd`` (no shell) and return the variables it prints.
    Its stdin stays the terminal's, so a manager can prompt; stderr is kept
    for the error message."""
    cmd = _shown(argv)
    try:
        res = subprocess.run(argv, cwd=cwd, env=dict(environ), capture_output=True,
                             timeout=TIMEOUT, check=False)
    except FileNotFoundError:
        raise ConfigError(
            f"{where}: secrets_command `{cmd}`: {argv[0]} not found",
            "install it, or name it by its path (relative paths start in the project folder)",
        ) from None
    except PermissionError:
        raise ConfigError(f"{where}: secrets_command `{cmd}`: {argv[0]} is not executable",
                          "chmod +x it, or name the interpreter first") from None
    except OSError as e:
        raise ConfigError(f"{where}: secrets_command `{cmd}`: {e.strerror}") from None
    except subprocess.TimeoutExpired:
        raise ConfigError(f"{where}: secrets_command `{cmd}` did not finish in "
                          f"{TIMEOUT:.0f}s") from None
    values: dict[str, str] = {}
    err = res.stderr.decode("utf-8", "replace").strip()
    if res.returncode == 0:
        values = _parse(res.stdout, where, cmd)
        for v in values.values():
            masker.add(v)
    if res.returncode != 0:
        # Whatever it printed on stdout may be half a secret: mask it before
        # anything about this command is shown.
        for line in res.stdout.decode("utf-8", "replace").splitlines():
            if "=" in line:
                masker.add(line.split("=", 1)[1].strip().strip("'\""))
        tail = "\n".join(err.splitlines()[-10:])
        raise ConfigError(
            f"{where}: secrets_command `{cmd}` failed (exit {res.returncode})"
            + (f": {masker.mask(tail)}" if tail else " and printed nothing on stderr"),
            "run it by hand in the project folder to see why",
        )
    return values


def _parse(out: bytes, where: str, cmd: str) -> dict[str, str]:
    from deployer.config.interpolate import parse_dotenv

    if len(out) > MAX_OUTPUT:
        raise ConfigError(f"{where}: secrets_command `{cmd}` printed more than 1 MiB")
    try:
        text = out.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: secrets_command `{cmd}` printed bytes that are not "
                          "UTF-8", "it must print dotenv (KEY=VALUE lines)") from None
    if text.lstrip().startswith("{"):
        return _from_json(text, where, cmd)
    return parse_dotenv(text, f"{where}: output of secrets_command `{cmd}`, line")


def _from_json(text: str, where: str, cmd: str) -> dict[str, str]:
    """A JSON object of strings; Vault's KV v2 (``data.data``) or v1 (``data``)."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("data"), dict):
        inner = data["data"]
        data = inner["data"] if isinstance(inner.get("data"), dict) else inner
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ConfigError(
            f"{where}: secrets_command `{cmd}` printed JSON that is not an object of strings",
            "print dotenv (KEY=VALUE lines) or {\"KEY\": \"value\", ...}",
        )
    return dict(data)


class LayeredEnv(Mapping[str, str]):
    """What ``${VAR}`` reads: ``environ``, then the command's output (run on
    the first name ``environ`` does not have), then ``below`` (secrets_file
    and compose's ``.env``)."""

    def __init__(self, environ: Mapping[str, str], below: Mapping[str, str],
                 argv: list[str] | None, cwd: Path, where: str) -> None:
        self.environ = environ
        self.below = below
        self.argv = argv
        self.cwd = cwd
        self.where = where
        self._from_command: dict[str, str] | None = None

    @property
    def ran(self) -> bool:
        return self._from_command is not None

    def _command(self) -> Mapping[str, str]:
        if self.argv is None:
            return {}
        if self._from_command is None:
            self._from_command = run_secrets_command(self.argv, self.cwd, self.environ,
                                                     self.where)
        return self._from_command

    def __getitem__(self, key: str) -> str:
        if key in self.environ:
            return self.environ[key]
        cmd = self._command()
        if key in cmd:
            return cmd[key]
        return self.below[key]

    def __iter__(self) -> Iterator[str]:
        seen = dict.fromkeys([*self.environ, *self._command(), *self.below])
        return iter(seen)

    def __len__(self) -> int:
        return sum(1 for _ in self)

