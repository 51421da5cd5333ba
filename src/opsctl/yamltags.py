"""Plain-data YAML scalars: the tags a runbook may hold, the limits on a document, and the typing of
plain scalars with PyYAML's YAML 1.1 rules (shared by the builder and the source map's keys)."""

from __future__ import annotations

from yaml.constructor import SafeConstructor
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

# runbooks are ~10-20 KB; at 1 MB a file of tiny flow nodes or of distinct Jinja texts cost 0.8-2.5 s
MAX_FILE_BYTES = 256 * 1024
MAX_DEPTH = 64  # nested mappings/sequences
MAX_VALUES = 100_000  # values after expanding aliases
MAX_STRING = 100_000  # characters in one scalar
MAX_NUMBER = 100  # characters of an integer or float literal

_T = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL = _T + "str", _T + "int", _T + "float", _T + "bool", _T + "null"
MAP, SEQ, TIMESTAMP, MERGE = _T + "map", _T + "seq", _T + "timestamp", _T + "merge"
VALUE = _T + "value"
PLAIN = "?"  # a plain scalar whose type the builder resolves
SCALAR_TAGS = frozenset((STR, INT, FLOAT, BOOL, NULL, TIMESTAMP))
_IMPLICIT = Resolver.yaml_implicit_resolvers  # first character -> [(tag, regexp)], YAML 1.1
CTOR = SafeConstructor()

# what an implicitly typed plain scalar may start with: any other first character makes a string
TYPED_FIRST = "".join(sorted(c for c in _IMPLICIT if c)).encode("ascii")

_TAG_MEMO: dict[str, str] = {}  # plain scalar -> tag, for the short ones (keys, flags, ...)


def plain_tag(value: str) -> str:
    got = _TAG_MEMO.get(value)
    if got is not None:
        return got
    tag = STR
    for t, regexp in _IMPLICIT.get(value[0] if value else "", ()):
        if regexp.match(value):
            tag = str(t)
            break
    if len(value) <= 32 and len(_TAG_MEMO) < 10_000:
        _TAG_MEMO[value] = tag
    return tag


def key_text(node: ScalarNode) -> str | None:
    """The dict key a scalar key node becomes (None: not a usable key).  A plain key is its text:
    YAML 1.1 would read ``no:``, ``on:`` or ``yes:`` (an environment, a label, a parameter named so)
    as booleans, and ``0x1F:`` as 31; keys are names here.  A key of nothing (``~:``, ``null:``) is
    not usable."""
    tag = plain_tag(node.value) if node.tag == PLAIN else node.tag
    if tag == STR:
        return str(node.value)
    if tag == NULL or tag not in SCALAR_TAGS or len(node.value) > MAX_NUMBER:
        return None
    if node.tag == PLAIN:
        return str(node.value)
    try:
        return str(CTOR.yaml_constructors[tag](CTOR, node))
    except Exception:
        return None
