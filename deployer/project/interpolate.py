"""compose's ``${VAR}`` interpolation, for the values deployer must
understand before the host does (paths, profiles, images).

Syntax (compose-spec "Interpolation"): ``$VAR``, ``${VAR}``,
``${VAR:-default}`` (unset or empty), ``${VAR-default}`` (unset),
``${VAR:?error}`` / ``${VAR?error}`` (required), ``${VAR:+alt}`` /
``${VAR+alt}`` (set), defaults may nest ``${...}``; ``$$`` is a literal ``$``.
An unset variable without a default is the empty string, as in compose.
"""

from __future__ import annotations

import re
from collections.abc import Callable

Lookup = Callable[[str], "str | None"]
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def substitute(text: str, lookup: Lookup) -> str:
    """``text`` with every variable replaced; ``ValueError`` on a required
    variable that is unset (its message is compose's) or bad syntax."""
    out, _ = _scan(text, 0, lookup, closing=False)
    return out


def escape(text: str) -> str:
    """A literal value written back into a compose file: ``$`` -> ``$$``."""
    return text.replace("$", "$$")


def _scan(text: str, i: int, lookup: Lookup, closing: bool) -> tuple[str, int]:
    out: list[str] = []
    n = len(text)
    while i < n:
        c = text[i]
        if closing and c == "}":
            return "".join(out), i
        if c != "$":
            out.append(c)
            i += 1
            continue
        nxt = text[i + 1] if i + 1 < n else ""
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "{":
            val, i = _braced(text, i + 2, lookup)
            out.append(val)
        else:
            m = _NAME.match(text, i + 1)
            if m:
                out.append(lookup(m.group(0)) or "")
                i = m.end()
            else:
                out.append("$")
                i += 1
    if closing:
        raise ValueError(f"unterminated variable reference in {text!r}")
    return "".join(out), i


def _braced(text: str, i: int, lookup: Lookup) -> tuple[str, int]:
    m = _NAME.match(text, i)
    if not m:
        raise ValueError(f"invalid variable reference in {text!r}")
    name = m.group(0)
    i = m.end()
    val = lookup(name)
    if i < len(text) and text[i] == "}":
        return val or "", i + 1
    op = ""
    for cand in (":-", ":?", ":+", "-", "?", "+"):
        if text.startswith(cand, i):
            op = cand
            break
    if not op:
        raise ValueError(f"invalid variable reference {text[m.start() - 2:]!r}")
    arg, j = _scan(text, i + len(op), lookup, closing=True)
    j += 1  # the closing brace
    unset_or_empty = not val
    missing = unset_or_empty if op.startswith(":") else val is None
    kind = op[-1]
    if kind == "-":
        return (arg if missing else val or ""), j
    if kind == "?":
        if missing:
            raise ValueError(f"required variable {name} is missing a value: {arg}".rstrip(": "))
        return val or "", j
    return ("" if missing else arg), j
