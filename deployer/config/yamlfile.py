"""YAML loading that remembers where every value came from.

pydantic reports errors by key path (``groups.web.hosts.web-1.port``); users
need ``inventories/prod.yaml:14:9``. We compose the YAML node tree ourselves,
build plain Python data from it and keep a map from key path to line/column.
Duplicate keys, which PyYAML silently lets the last one win, are an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deployer.errors import ConfigError

Loc = tuple[str | int, ...]


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
    """Parse ``path``; syntax errors become ConfigError with file:line:column."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{display}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{display}: cannot read: {e}") from None
    smap = SourceMap(path, display)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{display}:{mark.line + 1}:{mark.column + 1}" if mark else display
        problem = e.problem or e.context or "invalid YAML"
        raise ConfigError(
            f"{where}: YAML syntax error: {problem}", "fix the YAML syntax at that spot"
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{display}: YAML syntax error: {e}") from None
    if node is None:
        return {}, smap
    constructor = yaml.SafeLoader("")
    return _build(node, (), smap, constructor), smap


def _build(node: yaml.Node, loc: Loc, smap: SourceMap, c: yaml.SafeLoader) -> Any:
    smap.positions[loc] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        c.flatten_mapping(node)  # YAML merge keys (<<)
        out: dict[Any, Any] = {}
        for knode, vnode in node.value:
            key = c.construct_object(knode, deep=True)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                raise ConfigError(
                    f"{smap.display}:{knode.start_mark.line + 1}: keys must be plain strings"
                )
            key = str(key) if not isinstance(key, str) else key
            if key in out:
                raise ConfigError(
                    f"{smap.display}:{knode.start_mark.line + 1}:{knode.start_mark.column + 1}: "
                    f"duplicate key {key!r}"
                    + (f" under {'.'.join(map(str, loc))}" if loc else ""),
                    "each key may appear once per mapping; remove or merge the duplicate",
                )
            kloc: Loc = (*loc, key)
            out[key] = _build(vnode, kloc, smap, c)
            # point the key path at the key, not its value: that is where users look
            smap.positions[kloc] = (knode.start_mark.line + 1, knode.start_mark.column + 1)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(n, (*loc, i), smap, c) for i, n in enumerate(node.value)]
    return c.construct_object(node, deep=True)
