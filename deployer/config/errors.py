"""pydantic validation errors as ``file:line:col: key: message (did you mean ...)``."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from deployer.config.yamlfile import Loc, SourceMap
from deployer.errors import ConfigError


def _unwrap(ann: Any) -> list[Any]:
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        return [a for arg in typing.get_args(ann) for a in _unwrap(arg)]
    return [ann]


def _fields_at(model: type[BaseModel], loc: Loc) -> list[str]:
    """The keys allowed at ``loc`` (for did-you-mean), walking the model types."""
    current: list[Any] = [model]
    for part in loc:
        nxt: list[Any] = []
        for t in current:
            for a in _unwrap(t):
                origin = typing.get_origin(a)
                if isinstance(a, type) and issubclass(a, BaseModel):
                    f = a.model_fields.get(str(part))
                    if f is not None:
                        nxt.append(f.annotation)
                elif origin is dict:
                    nxt.append(typing.get_args(a)[1])
                elif origin is list and isinstance(part, int):
                    nxt.append(typing.get_args(a)[0])
        current = nxt
    names: list[str] = []
    for t in current:
        for a in _unwrap(t):
            if isinstance(a, type) and issubclass(a, BaseModel):
                names += list(a.model_fields)
    return names


def config_error(err: ValidationError, model: type[BaseModel], smap: SourceMap) -> ConfigError:
    """One line per problem, each naming file, line, key and what is wrong."""
    lines: list[str] = []
    hint = None
    for e in err.errors()[:10]:
        loc = _clean_loc(e["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        where = smap.where(loc)
        if e["type"] == "extra_forbidden":
            bad = str(loc[-1])
            allowed = _fields_at(model, loc[:-1])
            close = difflib.get_close_matches(bad, allowed, n=1, cutoff=0.6)
            msg = f"unknown key {bad!r}"
            if close:
                msg += f" (did you mean {close[0]!r}?)"
            elif allowed:
                hint = "allowed keys here: " + ", ".join(allowed)
        elif e["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = str(e["msg"]).removeprefix("Value error, ")
            if e["type"] in {"int_type", "int_parsing", "float_parsing", "string_type",
                             "dict_type", "list_type", "bool_type", "model_type"}:
                msg += f" (got {_short(e.get('input'))})"
        lines.append(f"{where}: {key}: {msg}")
    extra = len(err.errors()) - 10
    if extra > 0:
        lines.append(f"... and {extra} more problems")
    return ConfigError("\n".join(lines), hint)


_TAGS = {"int", "str", "float", "bool", "none", "dict", "list"}


def _clean_loc(loc: tuple[Any, ...]) -> Loc:
    """pydantic puts union member tags (``int``, ``HostConfig``,
    ``function-after[...]``) into locations; keep only the document's keys."""
    out: list[str | int] = []
    for p in loc:
        if isinstance(p, int):
            out.append(p)
        elif p in _TAGS or p[:1].isupper() or p.startswith(("function-", "literal[")):
            continue
        else:
            out.append(p)
    return tuple(out)


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."
