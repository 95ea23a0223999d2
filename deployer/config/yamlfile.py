"""YAML loading that remembers where every value came from.

pydantic reports errors by key path (``groups.web.hosts.web-1.port``); users
need ``inventories/prod.yaml:14:9``. We compose the YAML node tree ourselves,
build plain Python data from it and keep a map from key path to line/column.
Duplicate keys, which PyYAML silently lets the last one win, are an error.

The input is hostile until proven otherwise (a pull request's inventory is
checked in CI), so building is bounded: the file size (``readfile``), the
nesting depth (counted on the event stream, before PyYAML's recursive
composer could overflow the stack), the number of values built (an alias
"bomb" of nested ``*a`` references expands exponentially) and alias cycles
(``&l [*l]``). Only the plain YAML types are built: a tag such as
``!!python/object`` or ``!foo`` is an error naming its line, and so is a
value its tag cannot hold (``!!int abc``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deployer.config.readfile import read_text
from deployer.errors import ConfigError

Loc = tuple[str | int, ...]

# libyaml when present (about ten times faster); the same nodes and marks.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

MAX_DEPTH = 64
MAX_VALUES = 100_000

_T = "tag:yaml.org,2002:"
SCALAR_TAGS = {_T + t for t in ("str", "int", "float", "bool", "null", "timestamp")}
MAP_TAG, SEQ_TAG, MERGE_TAG = _T + "map", _T + "seq", _T + "merge"


@dataclass
class SourceMap:
    """Key path -> (line, column), both 1-based."""

    path: Path
    display: str
    positions: dict[Loc, tuple[int, int]] = field(default_factory=dict)

    def where(self, loc: Loc) -> str:
        """``file:line:col`` for the deepest known prefix of ``loc``."""
        for n in range(len(loc), -1, -1):
            pos = self.positions.get(tuple(loc[:n]))
            if pos:
                return f"{self.display}:{pos[0]}:{pos[1]}"
        return self.display


def load_yaml(path: Path, display: str) -> tuple[Any, SourceMap]:
    """Parse ``path``; every problem becomes a ConfigError with file:line:column."""
    text = read_text(path, display, "file")
    return parse_yaml(text, path, display)


def parse_yaml(text: str, path: Path, display: str) -> tuple[Any, SourceMap]:
    """:func:`load_yaml` of text already read."""
    smap = SourceMap(path, display)
    try:
        _check_depth(text, display)
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = e.problem or e.context or "invalid YAML"
        raise ConfigError(
            f"{_at(display, mark)}: YAML syntax error: {problem}",
            "fix the YAML syntax at that spot",
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{display}: YAML syntax error: {e}") from None
    except RecursionError:  # _check_depth should make this unreachable
        raise ConfigError(f"{display}: YAML nested too deeply") from None
    if node is None:
        return {}, smap
    return _Builder(smap).build(node, ()), smap


def _at(display: str, mark: Any) -> str:
    return f"{display}:{mark.line + 1}:{mark.column + 1}" if mark is not None else display


def _tag(tag: str) -> str:
    return "!!" + tag.removeprefix(_T) if tag.startswith(_T) else tag


def _check_depth(text: str, display: str) -> None:
    depth = 0
    for ev in yaml.parse(text, Loader=_LOADER):
        if isinstance(ev, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise ConfigError(
                    f"{_at(display, ev.start_mark)}: nested more than {MAX_DEPTH} levels deep",
                    "flatten the structure",
                )
        elif isinstance(ev, yaml.CollectionEndEvent):
            depth -= 1


class _Builder:
    """Plain data from a node tree, with positions, within the bounds above."""

    def __init__(self, smap: SourceMap) -> None:
        self.smap = smap
        self.c = yaml.SafeLoader("")
        self.count = 0
        self.path: set[int] = set()  # ids of the collection nodes being built

    def where(self, node: yaml.Node) -> str:
        return _at(self.smap.display, node.start_mark)

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        self.count += 1
        if self.count > MAX_VALUES:
            raise ConfigError(
                f"{self.where(node)}: more than {MAX_VALUES} values (are aliases expanding "
                "into each other?)",
                "write the values out, or use fewer nested aliases",
            )
        self.smap.positions.setdefault(loc, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node)
        if id(node) in self.path:
            raise ConfigError(
                f"{self.where(node)}: an alias refers to a value that contains it (recursion)",
                "remove the recursive alias",
            )
        if len(loc) > MAX_DEPTH:
            raise ConfigError(f"{self.where(node)}: nested more than {MAX_DEPTH} levels deep "
                              "(through aliases)")
        self.path.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                if node.tag not in (MAP_TAG, _T + "set"):
                    raise self.bad_tag(node)
                return self.mapping(node, loc)
            if isinstance(node, yaml.SequenceNode):
                if node.tag != SEQ_TAG:
                    raise self.bad_tag(node)
                return [self.build(n, (*loc, i)) for i, n in enumerate(node.value)]
        finally:
            self.path.discard(id(node))
        raise ConfigError(f"{self.where(node)}: unsupported YAML node")

    def bad_tag(self, node: yaml.Node) -> ConfigError:
        return ConfigError(
            f"{self.where(node)}: unsupported YAML tag {_tag(node.tag)}",
            "remove the tag: only plain strings, numbers, booleans, null, lists and "
            "mappings are read",
        )

    def scalar(self, node: yaml.ScalarNode) -> Any:
        if node.tag not in SCALAR_TAGS:
            raise self.bad_tag(node)
        try:
            return self.c.construct_object(node, deep=True)
        except Exception as e:  # ValueError for !!int abc, ConstructorError, ...
            short = node.tag.removeprefix(_T)
            problem = getattr(e, "problem", None) or str(e) or type(e).__name__
            raise ConfigError(
                f"{self.where(node)}: {node.value[:60]!r} is not a valid {short} ({problem})",
                f"fix the value or remove the !!{short} tag",
            ) from None

    def key(self, knode: yaml.Node) -> str:
        if not isinstance(knode, yaml.ScalarNode):
            raise ConfigError(f"{self.where(knode)}: keys must be plain strings")
        key = self.scalar(knode)
        if key is None or not isinstance(key, (str, int, float, bool)):
            raise ConfigError(f"{self.where(knode)}: keys must be plain strings")
        return key if isinstance(key, str) else str(key)

    def mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        out: dict[str, Any] = {}
        for knode, vnode in node.value:
            if knode.tag == MERGE_TAG:
                self.merge(merged, knode, vnode, loc)
                continue
            key = self.key(knode)
            if key in out:
                raise ConfigError(
                    f"{self.where(knode)}: duplicate key {key!r}"
                    + (f" under {'.'.join(map(str, loc))}" if loc else ""),
                    "each key may appear once per mapping; remove or merge the duplicate",
                )
            kloc: Loc = (*loc, key)
            out[key] = self.build(vnode, kloc)
            # point the key path at the key, not its value: that is where users look
            self.smap.positions[kloc] = (knode.start_mark.line + 1, knode.start_mark.column + 1)
        # YAML merge keys: the mapping's own keys win over merged ones.
        return {**merged, **out} if merged else out

    def merge(self, into: dict[str, Any], knode: yaml.Node, vnode: yaml.Node, loc: Loc) -> None:
        sources = vnode.value if isinstance(vnode, yaml.SequenceNode) else [vnode]
        if isinstance(vnode, yaml.SequenceNode):
            self.count += 1
        for src in sources:
            if not isinstance(src, yaml.MappingNode):
                raise ConfigError(
                    f"{self.where(src)}: '<<' (merge key) takes a mapping or a list of "
                    "mappings (usually aliases like *defaults)",
                    "fix or remove the merge key",
                )
            data = self.build(src, loc)
            # earlier sources win over later ones (YAML merge key spec)
            for k, v in data.items():
                into.setdefault(k, v)
