"""YAML -> plain data + a source map (path -> line:col), with the safe loader only.

Every value and every mapping key keeps the position it came from, so that schema and semantic
errors can name ``file:line:col``.  Duplicate keys are errors (PyYAML silently keeps the last one).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from opsctl.errors import Location, RunbookError

PathT = tuple[str | int, ...]
_PLAIN_TAGS = frozenset(f"tag:yaml.org,2002:{t}" for t in
                        ("str", "int", "float", "bool", "null", "map", "seq", "timestamp"))


def format_path(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass
class SourceMap:
    file: str
    values: dict[PathT, tuple[int, int]] = field(default_factory=dict)
    keys: dict[PathT, tuple[int, int]] = field(default_factory=dict)

    def locate(self, path: Iterable[str | int], *, key: bool = False) -> Location:
        """Position of ``path`` (of its key when ``key``), else of the nearest ancestor we know."""
        p = tuple(path)
        for i in range(len(p), -1, -1):
            sub = p[:i]
            table = self.keys if key and i == len(p) else self.values
            if sub in table:
                line, col = table[sub]
                return Location(self.file, line, col, format_path(p))
        return Location(self.file, 1, 1, format_path(p))

    def error(self, path: Iterable[str | int], message: str, *, key: bool = False) -> RunbookError:
        return RunbookError(message, self.locate(path, key=key))


@dataclass
class Document:
    data: Any
    source: SourceMap
    errors: list[RunbookError]


class _Builder:
    def __init__(self, file: str) -> None:
        self.source = SourceMap(file)
        self.errors: list[RunbookError] = []
        self._scalars = yaml.SafeLoader("")  # only its constructor tables are used
        self._open: set[int] = set()  # collection nodes being built (a recursive alias loops)

    def build(self, node: Node, path: PathT) -> Any:
        self.source.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if node.tag not in _PLAIN_TAGS:
            # the safe loader would refuse python/* tags; we refuse every non-standard tag, located
            self.errors.append(self.source.error(path, f"unsupported YAML tag {node.tag!r}: "
                                                 "runbooks are plain data"))
            return None
        if isinstance(node, MappingNode | SequenceNode):
            if id(node) in self._open:
                self.errors.append(self.source.error(path, "recursive YAML alias"))
                return None
            self._open.add(id(node))
            try:
                if isinstance(node, MappingNode):
                    return self._mapping(node, path)
                return [self.build(child, (*path, i)) for i, child in enumerate(node.value)]
            finally:
                self._open.discard(id(node))
        assert isinstance(node, ScalarNode)
        return self._scalars.construct_object(node, deep=True)

    def _mapping(self, node: MappingNode, path: PathT) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                self.errors.append(RunbookError(
                    "YAML merge keys (<<) are not supported: write the keys out",
                    Location(self.source.file, key_node.start_mark.line + 1,
                             key_node.start_mark.column + 1, format_path(path))))
                continue
            key = self.build(key_node, (*path, "<key>"))
            if not isinstance(key, str | int | float | bool):
                self.errors.append(self.source.error(path, "mapping keys must be scalars"))
                continue
            key = str(key) if not isinstance(key, str) else key
            child = (*path, key)
            position = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if key in out:
                first = self.source.keys[child]
                self.errors.append(RunbookError(
                    f"duplicate key {key!r} (first defined at line {first[0]})",
                    Location(self.source.file, *position, format_path(child))))
            else:
                self.source.keys[child] = position
            out[key] = self.build(value_node, child)
        self.source.values.pop((*path, "<key>"), None)
        return out


def load_text(text: str, file: str) -> Document:
    builder = _Builder(file)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        problem = " ".join(p for p in (e.context, e.problem) if p) or "invalid YAML"
        return Document(None, builder.source, [RunbookError(f"invalid YAML: {problem}", loc)])
    except yaml.YAMLError as e:
        return Document(None, builder.source, [RunbookError(f"invalid YAML: {e}", Location(file))])
    if node is None:
        return Document(None, builder.source, [RunbookError("empty file", Location(file, 1, 1))])
    data = builder.build(node, ())
    return Document(data, builder.source, builder.errors)


def load_file(path: str) -> Document:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as e:
        return Document(None, SourceMap(path), [RunbookError(f"cannot read: {e.strerror}",
                                                             Location(path))])
    except UnicodeDecodeError:
        return Document(None, SourceMap(path), [RunbookError("not UTF-8 text", Location(path))])
    return load_text(text, path)
