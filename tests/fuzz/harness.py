"""Running ``deployer`` in-process on a project folder and judging the result.

:func:`run` calls the CLI's real ``main()`` with a patched ``sys.argv`` and
environment, captures stdout and stderr, and stops a case that runs longer
than its timeout (SIGALRM: a blocking ``open`` of a FIFO is interrupted too).
:func:`problems` lists what is wrong with a result: a traceback, an internal
error, a hang, an exit code other than 0 or 2, an error without a location,
invalid JSON under ``-o json``, ``::add-mask::`` on stdout, or any spelling of
a planted secret in the output.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import shlex
import signal
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "flask-postgres"

# Planted through the environment: distinctive, and full of characters that
# JSON, shells, URLs and HTML escape.
SECRETS = {
    "DB_PASSWORD": 'Hu"n\\t<&\u00e9-r2 x\tQ',
    "REGISTRY_PASSWORD": "R3g!stry/Pa$$:w0rd+=",
}


class CaseTimeout(BaseException):
    """A case ran past its timeout (a hang)."""


@dataclass
class Result:
    argv: list[str]
    code: int | None
    stdout: str
    stderr: str
    hung: bool = False
    crashed: str = ""  # an exception that escaped main()


def _alarm(signum: int, frame: object) -> None:
    raise CaseTimeout()


def run(project: Path, argv: list[str], env: dict[str, str] | None = None,
        timeout: float = 10.0) -> Result:
    """``deployer -C project *argv`` in this process."""
    from deployer.cli import main as cli_main
    from deployer.report import github
    from deployer.secrets import masker

    masker.clear()  # each case on its own: what an earlier one registered is gone

    full = ["deployer", "-C", str(project), *argv]
    environ = {**SECRETS, "NO_COLOR": "1", **(env or {})}
    saved_env = dict(os.environ)
    saved_argv = sys.argv
    out, err = io.StringIO(), io.StringIO()
    code: int | None = None
    hung = False
    crashed = ""
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        os.environ.pop("GITHUB_ACTIONS", None)
        os.environ.pop("CI", None)
        os.environ.update(environ)
        sys.argv = full
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                cli_main.main()
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except CaseTimeout:
                hung = True
            except BaseException as e:  # what the test looks for
                crashed = f"{type(e).__name__}: {e}"
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.signal(signal.SIGALRM, old)
        github.disable_masks()
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
    return Result(full, code, out.getvalue(), err.getvalue(), hung, crashed)


def spellings(secret: str) -> dict[str, str]:
    """Every form of ``secret`` that must never be printed."""
    forms = {
        "raw": secret,
        "json": json.dumps(secret)[1:-1],
        "json-unicode": json.dumps(secret, ensure_ascii=False)[1:-1],
        "tojson": json.dumps(secret)[1:-1].replace("<", "\\u003c").replace(">", "\\u003e")
        .replace("&", "\\u0026").replace("'", "\\u0027"),
        "shell": shlex.quote(secret),
        "url": urllib.parse.quote(secret, safe=""),
        "url-plus": urllib.parse.quote_plus(secret),
        "base64": base64.b64encode(secret.encode()).decode().rstrip("="),
        "upper": secret.upper(),
        "lower": secret.lower(),
        "reversed": secret[::-1],
    }
    return forms


# file:line, or file:line:col, or a key path, host, option or variable name
LOCATION = re.compile(
    r"(\S+\.(ya?ml|j2|env)(:\d+)?|deployer\.yaml|inventories/|--\w+|environment name|"
    r"environment variable|secrets_file|template|host |hosts|group|[a-z_]+\.[a-z_]+:)"
)


def problems(r: Result, json_out: bool = False) -> list[str]:
    """What is wrong with ``r`` (empty: nothing)."""
    found: list[str] = []
    text = r.stdout + r.stderr
    if r.hung:
        found.append("hang (timeout)")
    if r.crashed:
        found.append(f"exception escaped main(): {r.crashed}")
    if "Traceback" in text:
        found.append("traceback in output")
    if "internal error" in text:
        found.append("internal error")
    if r.code not in (0, 2) and not r.hung and not r.crashed:
        found.append(f"exit code {r.code}")
    if r.code == 2:
        lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("::")]
        first = lines[0] if lines else ""
        if not (first.startswith("error: ") or first.startswith("Usage:")):
            found.append(f"exit 2 without 'error: ' first: {first[:200]!r}")
        elif first.startswith("error: ") and not LOCATION.search(first):
            found.append(f"error without a location: {first[:200]!r}")
    if "::add-mask::" in r.stdout:
        found.append("::add-mask:: on stdout")
    if json_out and r.code == 0:
        try:
            json.loads(r.stdout)
        except ValueError as e:
            found.append(f"stdout is not JSON: {e}")
    searched = "\n".join(
        ln for ln in text.splitlines() if not ln.startswith("::add-mask::")
    )
    for name, secret in SECRETS.items():
        for form, value in spellings(secret).items():
            if value in searched:
                found.append(f"{name} leaked ({form})")
    return found
