"""Where a runbook's values came from: a source map (path -> line:col, computed from the YAML nodes
when first asked) and the one-line, located errors that name ``file:line:col``."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from opsctl.errors import Location, RunbookError
from opsctl.yamltags import MAX_DEPTH, MAX_VALUES, key_text

PathT = tuple[str | int, ...]
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


def one_line(message: str, limit: int = 500) -> str:
    """An error message on exactly one line (editors and CI annotators split on newlines)."""
    text = " ".join(_CONTROL.sub(" ", message).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_<>-][A-Za-z0-9_ <>-]*$")


def format_path(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _PLAIN_KEY.match(part):
            out += f"[{short_repr(part, 40)}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class SourceMap:
    """Positions of the values (and keys) of a document, computed from its nodes when first asked:
    a document without errors never pays for them."""

    def __init__(self, file: str, root: Node | None = None,
                 compose: Callable[[], Node | None] | None = None) -> None:
        self.file = file
        self._root = root
        self._compose = compose  # makes the root when first needed (the loader's fast path)
        self._values: dict[PathT, tuple[int, int]] | None = None
        self._keys: dict[PathT, tuple[int, int]] = {}

    @property
    def values(self) -> dict[PathT, tuple[int, int]]:
        if self._values is None:
            self._values = {}
            root = self._root_node()
            if root is not None:
                self._index(root, (), 0, set())
        return self._values

    @property
    def keys(self) -> dict[PathT, tuple[int, int]]:
        self.values  # noqa: B018 - builds both tables
        return self._keys

    def _root_node(self) -> Node | None:
        if self._compose is not None:
            compose, self._compose = self._compose, None
            self._root = compose()
        return self._root

    def _index(self, node: Node, path: PathT, depth: int, open_: set[int]) -> None:
        assert self._values is not None
        self._values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if depth >= MAX_DEPTH or id(node) in open_ or len(self._values) > MAX_VALUES:
            return
        if isinstance(node, SequenceNode):
            open_.add(id(node))
            for i, child in enumerate(node.value):
                self._index(child, (*path, i), depth + 1, open_)
            open_.discard(id(node))
        elif isinstance(node, MappingNode):
            open_.add(id(node))
            for key_node, value_node in node.value:
                if not isinstance(key_node, ScalarNode):
                    continue
                key = key_text(key_node)
                if key is None:
                    continue
                child = (*path, key)
                # a duplicate key: its first position is the reference, the last value is the data
                self._keys.setdefault(child, (key_node.start_mark.line + 1,
                                              key_node.start_mark.column + 1))
                self._index(value_node, child, depth + 1, open_)
            open_.discard(id(node))

    def position(self, path: PathT) -> tuple[int, int] | None:
        """line, column of the value at ``path``, found by walking down the nodes (a few lookups
        do not need the whole table ``values`` builds); None when the path is not there."""
        if self._values is not None:
            return self._values.get(path)
        node = self._root_node()
        for part in path:
            if isinstance(node, SequenceNode) and isinstance(part, int) \
                    and 0 <= part < len(node.value):
                node = node.value[part]
            elif isinstance(node, MappingNode):
                found = [v for k, v in node.value if isinstance(k, ScalarNode) and key_text(k) == part]
                if not found:
                    return None
                node = found[-1]  # a duplicate key: the last value is the data
            else:
                return None
        return None if node is None else (node.start_mark.line + 1, node.start_mark.column + 1)

    def locate(self, path: Iterable[str | int], *, key: bool = False) -> Location:
        """Position of ``path`` (of its key when ``key``), else of the nearest ancestor we know."""
        p = tuple(path)
        values = self.values
        for i in range(len(p), -1, -1):
            sub = p[:i]
            table = self._keys if key and i == len(p) else values
            if sub in table:
                line, col = table[sub]
                return Location(self.file, line, col, format_path(p))
        return Location(self.file, 1, 1, format_path(p))

    def error(self, path: Iterable[str | int], message: str, *, key: bool = False) -> RunbookError:
        return RunbookError(one_line(message), self.locate(path, key=key))


@dataclass
class Document:
    data: Any
    source: SourceMap
    errors: list[RunbookError] = field(default_factory=list)
