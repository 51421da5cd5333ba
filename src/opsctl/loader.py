"""YAML -> plain data + a source map (path -> line:col), with libyaml and plain-data tags only.

Every value and every mapping key keeps the position it came from, so that schema and semantic
errors can name ``file:line:col``.  Duplicate keys are errors (PyYAML silently keeps the last one).

Any input gets data or located errors, in bounded time and memory: the file size, the nesting
depth, the number of values after expanding aliases (a "billion laughs" bomb is refused while it is
being built, not after), the length of strings and of numbers are capped; text that is not UTF-8
names the offending byte as line:col.  libyaml composes the node tree (its marks give the
positions); implicit typing of plain scalars is done by the builder, with PyYAML's YAML 1.1 rules
(``opsctl.yamltags``).  Positions and located errors: ``opsctl.sourcemap`` (re-exported here).
"""

from __future__ import annotations

import math
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from opsctl.errors import MAX_FILE_ERRORS, Location, RunbookError
from opsctl.fsread import read_regular
from opsctl.sourcemap import Document, PathT, SourceMap, format_path, one_line, short_repr
from opsctl.yamltags import (
    _TAG_MEMO,
    CTOR,
    MAP,
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_NUMBER,
    MAX_STRING,
    MAX_VALUES,
    MERGE,
    NULL,
    PLAIN,
    SCALAR_TAGS,
    SEQ,
    STR,
    TYPED_FIRST,
    VALUE,
    key_text,
    plain_tag,
)

try:
    from yaml._yaml import CParser as _Parser
except ImportError:  # pragma: no cover - PyYAML built without libyaml: the same, in Python

    class _Parser(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser,  # type: ignore[no-redef]
                  yaml.composer.Composer):
        def __init__(self, stream: str) -> None:
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)
            yaml.composer.Composer.__init__(self)

        def dispose(self) -> None:
            pass


FAST_INTERFACE = 2  # the version of _yamlfast.compose this module calls
try:  # the common case in C (see _yamlfast.c): same data, ~5x less CPU; optional at install
    from opsctl import _yamlfast as _fast
except ImportError:  # pragma: no cover - built without libyaml's headers: the Python path only
    _fast = None  # type: ignore[assignment]


def _usable(module: Any) -> Any:
    """The C part when it is the build this module calls; a stale one (an editable install not
    rebuilt after a change to compose()) is not used."""
    return module if getattr(module, "INTERFACE", None) == FAST_INTERFACE else None


_fast = _usable(_fast)


class _Composer(_Parser):  # type: ignore[misc]
    """libyaml's composer with typing left to the builder (PyYAML's resolver costs more than
    libyaml's parsing itself)."""

    def descend_resolver(self, parent: Any, index: Any) -> None:
        pass

    def ascend_resolver(self) -> None:
        pass

    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is ScalarNode:
            return PLAIN if implicit[0] else STR
        return SEQ if kind is SequenceNode else MAP


class _Stop(Exception):
    """The document cannot be built any further (too large, too deep)."""

    def __init__(self, node: Node, message: str) -> None:
        super().__init__(message)
        self.node, self.message = node, message


_Path = tuple  # where a value is, while building: (parent's _Path, key or index), () at the root


def _flat(path: _Path) -> PathT:
    parts: list[str | int] = []
    while path:
        path, part = path
        parts.append(part)
    return tuple(reversed(parts))


def _is_text(node: Node, memo: dict[str, str] = _TAG_MEMO) -> bool:
    """A string scalar within the limits, known without typing it (most keys and values of a runbook:
    the memo holds only short plain scalars)."""
    if type(node) is not ScalarNode:
        return False
    tag = node.tag
    return (tag == PLAIN and memo.get(node.value) == STR) or (tag == STR and len(node.value) <= MAX_STRING)


def _typed(tag: str, value: str, node: ScalarNode | None = None) -> tuple[Any, str]:
    """The value of a scalar of this tag, or (None, what is wrong with it)."""
    if tag == STR:
        if len(value) > MAX_STRING:
            return None, f"string of {len(value)} characters (the limit is {MAX_STRING})"
        return value, ""
    if tag not in SCALAR_TAGS:
        if tag in (MERGE, VALUE):  # `<<` / `=` as plain values are just text
            return value, ""
        # the safe loader would refuse python/* tags; we refuse every non-standard tag, located
        return None, f"unsupported YAML tag {short_repr(tag)}: runbooks are plain data"
    if tag != NULL and len(value) > MAX_NUMBER:
        return None, (f"{tag.rsplit(':', 1)[-1]} literal of {len(value)} characters "
                      f"(the limit is {MAX_NUMBER})")
    try:
        out = CTOR.yaml_constructors[tag](CTOR, node or ScalarNode(tag, value))
    except Exception:
        return None, f"{short_repr(value)} is not a valid {tag.rsplit(':', 1)[-1]}"
    if isinstance(out, float) and not math.isfinite(out):
        return None, f"{short_repr(value)}: numbers must be finite (no .inf or .nan)"
    return out, ""


class _Builder:
    """Nodes -> plain data.  Paths are linked pairs while building (a value's path is made only when
    it has an error), and the plain strings that are most of a runbook are taken inline."""

    def __init__(self, file: str, aliases: bool = True) -> None:
        self.file = file
        self.errors: list[RunbookError] = []
        self._aliases = aliases  # False: the text has no anchor, no node is reached twice
        self._open: set[int] = set()  # collection nodes being built (a recursive alias loops)
        self._count = 0

    def err(self, node: Node, message: str, path: _Path) -> None:
        self.errors.append(RunbookError(one_line(message), Location(
            self.file, node.start_mark.line + 1, node.start_mark.column + 1, format_path(_flat(path)))))
        if len(self.errors) > MAX_FILE_ERRORS:  # catalog says the check stopped
            raise _Stop(node, "")

    def build(self, node: Node, path: _Path, depth: int) -> Any:
        self._count += 1
        if self._count > MAX_VALUES:
            raise _Stop(node, f"more than {MAX_VALUES} values after expanding YAML aliases "
                        "(an alias bomb?)")
        if type(node) is ScalarNode:
            return self.scalar(node, path)
        if depth >= MAX_DEPTH:
            raise _Stop(node, f"nested more than {MAX_DEPTH} levels deep")
        if not self._aliases:
            return self.collection(node, path, depth)
        key = id(node)
        if key in self._open:
            self.err(node, "recursive YAML alias", path)
            return None
        self._open.add(key)
        try:
            return self.collection(node, path, depth)
        finally:
            self._open.discard(key)

    def collection(self, node: Node, path: _Path, depth: int) -> Any:
        if type(node) is MappingNode:
            if node.tag != MAP:
                self.err(node, f"unsupported YAML tag {short_repr(node.tag)} on a mapping: "
                         "runbooks are plain data", path)
                return None
            return self.mapping(node, path, depth)
        if node.tag != SEQ:
            self.err(node, f"unsupported YAML tag {short_repr(node.tag)} on a sequence: "
                     "runbooks are plain data", path)
            return None
        out: list[Any] = []
        for i, child in enumerate(node.value):
            # inline only under the budget: the value that crosses it goes through build(), which
            # says where, whether or not its text is in the process-wide memo (_is_text)
            if self._count < MAX_VALUES and _is_text(child):
                self._count += 1
                out.append(child.value)
            else:
                out.append(self.build(child, (path, i), depth + 1))
        return out

    def scalar(self, node: ScalarNode, path: _Path) -> Any:
        value: str = node.value
        tag = plain_tag(value) if node.tag == PLAIN else node.tag
        out, problem = _typed(tag, value, node)
        if problem:
            self.err(node, problem, path)
            return None
        return out

    def mapping(self, node: MappingNode, path: _Path, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        first_at: dict[str, Node] | None = None  # each key's first node, made at the first duplicate
        for key_node, value_node in node.value:
            key = key_node.value if _is_text(key_node) else self.key(key_node, path)
            if key is None:
                continue
            if key in out:
                if first_at is None:
                    first_at = {}
                    for k, _ in node.value:
                        text = key_text(k) if type(k) is ScalarNode else None
                        if text is not None:
                            first_at.setdefault(text, k)
                first = first_at[key]
                self.err(key_node, f"duplicate key {short_repr(key)} (first defined at line "
                         f"{first.start_mark.line + 1})", (path, key))
            if self._count < MAX_VALUES and _is_text(value_node):  # as in collection()
                self._count += 1
                out[key] = value_node.value
            else:
                out[key] = self.build(value_node, (path, key), depth + 1)
        return out

    def key(self, key_node: Node, path: _Path) -> str | None:
        """The dict key of a key node that is not plain text (None, with an error: not usable)."""
        if type(key_node) is not ScalarNode:
            self.err(key_node, "mapping keys must be scalars", path)
            return None
        tag = plain_tag(key_node.value) if key_node.tag == PLAIN else key_node.tag
        if tag == MERGE:
            self.err(key_node, "YAML merge keys (<<) are not supported: write the keys out", path)
            return None
        key = key_text(key_node)
        if key is None:
            self.err(key_node, f"unsupported mapping key {short_repr(key_node.value)}", path)
        return key


def _position(data: bytes, offset: int) -> tuple[int, int]:
    """1-based line and column (in characters) of a byte offset of UTF-8 text."""
    offset = max(0, min(offset, len(data)))
    start = data.rfind(b"\n", 0, offset) + 1
    return data.count(b"\n", 0, offset) + 1, len(data[start:offset].decode("utf-8", "replace")) + 1


def _char_at(text: str, line: int, column: int) -> str:
    """The character at a 0-based line and column of the text ('' past its end)."""
    start = 0
    for _ in range(line):
        start = text.find("\n", start) + 1
        if start == 0:
            return ""
    return text[start + column: start + column + 1] if column >= 0 else ""


def _yaml_error(e: yaml.YAMLError, text: str, file: str) -> RunbookError:
    if isinstance(e, yaml.reader.ReaderError):  # libyaml: a byte offset into the UTF-8 text
        data = text.encode("utf-8", "surrogateescape")
        line, col = _position(data, e.position)
        char = e.character
        what = f"#x{char:04x}" if isinstance(char, int) else short_repr(char)
        return RunbookError(one_line(f"invalid YAML: unacceptable character {what}: {e.reason}"),
                            Location(file, line, col))
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file, 1, 1)
        parts = [str(p) for p in (e.context, e.problem) if p]
        start = e.context_mark
        if e.context and start and e.problem_mark and start.line != e.problem_mark.line:
            # where the construct began: an unclosed `{` 40 lines up is found at the end of file
            at = f"line {start.line + 1}, column {start.column + 1}"
            parts = ([f"duplicate anchor (first defined at {at})"]
                     if str(e.context).startswith("found duplicate anchor")
                     else [f"{e.context} (from {at})", *parts[1:]])
        if mark and _char_at(text, mark.line, mark.column) == "\t":
            parts.append("a tab; YAML indents with spaces")
        return RunbookError(one_line(f"invalid YAML: {': '.join(parts) or 'invalid YAML'}"), loc)
    return RunbookError(one_line(f"invalid YAML: {e}"), Location(file, 1, 1))


_BAIL = object()  # the C composer's answer when a text is not the common case


def _fast_scalar(value: str) -> Any:
    """A plain scalar's value for the C composer (``_BAIL``: it has an error, the full path says it)."""
    out, problem = _typed(plain_tag(value), value)
    return _BAIL if problem else out


def _fast_key(value: str) -> Any:
    """A plain mapping key for the C composer: its text when it is plain text (the builder's
    ``_is_text``/``key``), else ``_BAIL`` (``<<``, ``=``, ``1``, ``yes``: the full path decides)."""
    return value if plain_tag(value) == STR else _BAIL


def _compose(text: str) -> Node | None:
    """PyYAML's node tree (libyaml's composer, no typing); raises what PyYAML raises."""
    parser = _Composer(text)
    try:
        return parser.get_single_node()
    finally:
        parser.dispose()


def _positions_of(text: str) -> Node | None:
    """The node tree of a text the C part read, for positions (asked for only on a later error)."""
    try:
        return _compose(text)
    except (yaml.YAMLError, UnicodeEncodeError):  # pragma: no cover - libyaml read it just now
        return None


def load_text(text: str, file: str) -> Document:
    if _fast is not None:
        data = _fast.compose(text, _TAG_MEMO, STR, TYPED_FIRST, _fast_scalar, _fast_key, _BAIL,
                             MAX_DEPTH, MAX_VALUES, MAX_STRING)
        if data is not _BAIL:
            return Document(data, SourceMap(file, compose=lambda: _positions_of(text)))
    builder = _Builder(file, aliases="&" in text)
    source = SourceMap(file)
    try:
        node = _compose(text)
    except yaml.YAMLError as e:
        return Document(None, source, [_yaml_error(e, text, file)])
    except UnicodeEncodeError as e:  # a lone surrogate: text that did not come from UTF-8 bytes
        line = text.count("\n", 0, e.start) + 1
        col = e.start - (text.rfind("\n", 0, e.start) + 1) + 1
        return Document(None, source, [RunbookError(
            f"not UTF-8 text: {short_repr(text[e.start])} ({e.reason})", Location(file, line, col))])
    if node is None:
        return Document(None, source, [RunbookError("empty file", Location(file, 1, 1))])
    source = SourceMap(file, node)
    try:
        data = builder.build(node, (), 0)
    except _Stop as stop:
        if stop.message:
            builder.errors.append(RunbookError(stop.message, Location(
                file, stop.node.start_mark.line + 1, stop.node.start_mark.column + 1)))
        return Document(None, source, builder.errors)
    return Document(data, source, builder.errors)


def decode(data: bytes, file: str) -> tuple[str | None, list[RunbookError]]:
    """UTF-8 text (a UTF-8 BOM is dropped), or one located error."""
    if len(data) > MAX_FILE_BYTES:
        return None, [RunbookError(f"file larger than {MAX_FILE_BYTES} bytes: not a runbook",
                                   Location(file, 1, 1))]
    for bom, name in ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
                      (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16")):
        if data.startswith(bom):
            return None, [RunbookError(f"{name} text (byte order mark {bom.hex(' ').upper()}): "
                                       "save runbooks as UTF-8", Location(file, 1, 1))]
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError as e:
        start = e.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)
        line, col = _position(data, start)
        return None, [RunbookError(f"not UTF-8 text: byte 0x{data[start]:02x} at offset {start} "
                                   f"({e.reason})", Location(file, line, col))]


def load_bytes(data: bytes, file: str) -> Document:
    text, errors = decode(data, file)
    if text is None:
        return Document(None, SourceMap(file), errors)
    return load_text(text, file)


def read(path: str) -> tuple[bytes | None, list[RunbookError]]:
    try:
        data = read_regular(path, MAX_FILE_BYTES + 1)
    except OSError as e:
        return None, [RunbookError(one_line(f"cannot read: {e.strerror or e}"),
                                   Location(path, 1, 1))]
    return data, []



def load_file(path: str) -> Document:
    data, errors = read(path)
    if data is None:
        return Document(None, SourceMap(path), errors)
    return load_bytes(data, path)
