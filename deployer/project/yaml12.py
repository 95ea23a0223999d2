"""Reading compose YAML fast, writing it back faithfully (YAML 1.2).

compose parses YAML 1.2: ``22:22`` is a string, ``no`` is the string "no",
``0755`` is the decimal 755. PyYAML speaks 1.1 and would turn those into
1342, False and 493, so anything deployer *writes* goes through ruamel.yaml's
round-trip mode, which keeps 1.2 scalars, comments, anchors, merge keys and
tags (``!reset``, ``!override``) as they were.

Reading stays on libyaml (about ten times faster, and a no-op ship parses
every host's compose file): the values deployer reads (paths, ``restart``,
``profiles``, ``env_file``, ...) are strings either way, and the one that is
not (``restart: no``, False under 1.1) is normalised by its readers. compose's
own tags are accepted and stand for the value they tag.
"""

from __future__ import annotations

import io
from typing import Any

import yaml

_BASE: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ComposeLoader(_BASE):  # type: ignore[valid-type,misc]
    """Safe loading, plus compose's ``!reset`` and ``!override`` tags."""


def _tagged(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


for _tag in ("!reset", "!override"):
    ComposeLoader.add_constructor(_tag, _tagged)


def load_fast(text: str) -> Any:
    """Parse for reading only (see the module doc)."""
    return yaml.load(text, Loader=ComposeLoader)  # noqa: S506 (a safe loader)


def is_false(value: Any) -> bool:
    """``no``/``false`` as written, whichever YAML version read it."""
    return value is False or (isinstance(value, str) and value.lower() in ("no", "false"))


def _rt() -> Any:
    from ruamel.yaml import YAML

    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=2, sequence=4, offset=2)
    return y


def load_rt(text: str) -> Any:
    """Round-trip document (ruamel ``CommentedMap``), YAML 1.2."""
    return _rt().load(text)


def dump_rt(doc: Any) -> str:
    buf = io.StringIO()
    _rt().dump(doc, buf)
    return buf.getvalue()


def load_12(text: str) -> Any:
    """Plain data as compose sees it (YAML 1.2, tags dropped), for checks."""
    from ruamel.yaml import YAML

    y = YAML(typ="safe", pure=True)
    for tag in ("!reset", "!override"):
        y.constructor.add_constructor(tag, _ruamel_tagged)
    return y.load(text)


def _ruamel_tagged(constructor: Any, node: Any) -> Any:
    from ruamel.yaml.nodes import MappingNode, SequenceNode

    if isinstance(node, MappingNode):
        return constructor.construct_mapping(node, deep=True)
    if isinstance(node, SequenceNode):
        return constructor.construct_sequence(node, deep=True)
    return constructor.construct_scalar(node)
