"""The loader's C part (``opsctl._yamlfast``) against its Python path: the same data for every text
it takes, and every text it does not take left to the Python path (which names the errors).

The C part is optional at install (no libyaml headers: the Python path only); where it is built,
as in CI (``OPSCTL_REQUIRE_YAMLFAST=1``), these tests must not skip.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest

from opsctl import loader, yamltags
from tests.engine.test_validate_fuzz import MUTATIONS
from tests.fixtures.core import RUNBOOK_FILES

FAST = loader._fast
needs_fast = pytest.mark.skipif(FAST is None, reason="opsctl._yamlfast not built (no libyaml headers)")


def test_the_c_part_is_built_where_it_is_required() -> None:
    if os.environ.get("OPSCTL_REQUIRE_YAMLFAST") == "1":
        assert FAST is not None, ("opsctl._yamlfast did not build (is libyaml-dev installed?) or is "
                                  "a stale build (reinstall: scripts/setup.sh)")


def test_a_build_of_another_interface_is_not_used() -> None:
    import types

    assert loader._usable(types.SimpleNamespace(INTERFACE=loader.FAST_INTERFACE - 1)) is None
    assert loader._usable(types.SimpleNamespace()) is None and loader._usable(None) is None
    if FAST is not None:
        assert loader._usable(FAST) is FAST


def _fast(text: str) -> Any:
    assert FAST is not None
    return FAST.compose(text, yamltags._TAG_MEMO, yamltags.STR, yamltags.TYPED_FIRST,
                        loader._fast_scalar, loader._fast_key, loader._BAIL, yamltags.MAX_DEPTH,
                        yamltags.MAX_VALUES, yamltags.MAX_STRING)


def _python(text: str, file: str = "f.yaml") -> loader.Document:
    saved = loader._fast
    loader._fast = None
    try:
        return loader.load_text(text, file)
    finally:
        loader._fast = saved


def _same(a: Any, b: Any) -> bool:
    """Equal, type for type (``True == 1`` and ``1 == 1.0`` are not the same data), keys in order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _agree(text: str) -> bool:
    """Assert that load_text gives what the Python path gives; True when the C part took the text
    (the same data, no errors), False when it left it (the same errors)."""
    got, want = _fast(text), _python(text)
    if got is loader._BAIL:
        doc = loader.load_text(text, "f.yaml")
        assert [str(e) for e in doc.errors] == [str(e) for e in want.errors], text
        assert _same(doc.data, want.data), text
        return False
    assert want.errors == [] and _same(got, want.data), text
    return True


def test_same_is_strict() -> None:
    assert not _same({"a": True}, {"a": 1}) and not _same([1], [1.0])
    assert not _same({"a": 1, "b": 2}, {"b": 2, "a": 1}) and _same({"a": [None]}, {"a": [None]})


@needs_fast
@pytest.mark.parametrize("path", RUNBOOK_FILES, ids=lambda p: p.name)
def test_every_shipped_runbook_takes_the_c_part_and_gets_the_same_data(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    want = _python(text)
    assert want.errors == []
    got = _fast(text)
    assert got is not loader._BAIL, "the C part left a shipped runbook to the Python path"
    assert _same(got, want.data)


TAKEN = {
    "plain types": "a: 1\nb: -0x1F\nc: 1.5e3\nd: yes\ne: ~\nf: \nh: 2026-01-01\ni: 1:30\nj: =\nk: <<\n",
    "integers": ("a: 0\nb: -0\nc: +5\nd: 007\ne: 1_000\nf: 123456789012345678\n"
                 "g: 1234567890123456789\nh: 12a\ni: '5'\nj: 0b11\nk: 08\nl: -12\nm: 1.0\n"),
    "strings": "a: 'x'\nb: \"y\\tz\"\nc: |\n  block\n  text\nd: >-\n  folded\ne: é\nf: ' '\n",
    "flow": "a: [1, 'two', {b: [c, {d: e}]}]\nb: {}\nc: []\n",
    "keys typed as text": "'1': a\n\"true\": b\nx y: c\n",
    "a document marker": "---\na: 1\n...\n",
    "anchor": "a: &x 1\n",
    "aliases": "a: &x {b: [1, {c: 2}]}\nd: *x\ne: [*x, *x]\nf: &s text\ng: [*s]\n",
    "alias in an anchor": "a: &x [1]\nb: &y {c: *x}\nd: [*y, *x]\n",
    "anchored key": "&k key: v\nb: *k\n",
    "jinja": "a: \"{{ params.x | default('y') }}\"\nb: '{% if x %}1{% endif %}'\n",
}


@needs_fast
@pytest.mark.parametrize("text", TAKEN.values(), ids=TAKEN.keys())
def test_what_the_c_part_takes_it_reads_as_the_python_path_does(text: str) -> None:
    got = _fast(text)
    want = _python(text)
    assert got is not loader._BAIL and want.errors == [] and _same(got, want.data)


LEFT = {
    "syntax error": "a: [1\n",
    "duplicate key": "a: 1\na: 2\n",
    "plain key not text": "1: a\n",
    "boolean key": "yes: a\n",
    "null key": "~: a\n",
    "merge key": "a: &x {b: 1}\nc:\n  <<: *x\n",
    "merge key without an anchor": "a: 1\n<<: {b: 2}\n",
    "nested merge key": "a:\n  <<: x\n",
    "value key": "=: 1\n",
    "integer key": "a: {7: x}\n",
    "recursive alias": "a: &x [1, *x]\n",
    "undefined alias": "a: *y\n",
    "duplicate anchor": "a: &x 1\nb: &x 2\n",
    "alias as a key": "a: &x k\n*x : 2\n",
    "alias nested too deep": "a: &x " + "[" * 40 + "]" * 40 + "\nb: " + "[" * 30 + "*x" + "]" * 30 + "\n",
    "alias bomb": "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [{', '.join(['*' + p] * 10)}]\n" for p, n in zip("abcd", "bcde", strict=True)),
    "tag": "a: !!str 1\n",
    "local tag": "a: !x 1\n",
    "tag on a mapping": "a: !!map {b: 1}\n",
    "non-specific tag": "a: ! 1\n",
    "sequence root": "- a\n",
    "scalar root": "a\n",
    "empty": "",
    "only a comment": "# nothing\n",
    "two documents": "a: 1\n---\nb: 2\n",
    "mapping as a key": "? {a: 1}\n: b\n",
    "sequence as a key": "? [a]\n: b\n",
    "too deep": "a: " + "[" * 70 + "]" * 70 + "\n",
    "a long string": "a: '" + "x" * (yamltags.MAX_STRING + 1) + "'\n",
    "a long plain string": "a: " + "x" * (yamltags.MAX_STRING + 1) + "\n",
    "a long number": "a: " + "9" * (yamltags.MAX_NUMBER + 1) + "\n",
    "an infinite float": "a: .inf\n",
    "not a number": "a: .nan\n",
    "a bad timestamp": "a: 2026-13-45\n",
    "control character": "a: \x07\n",
    "lone surrogate": "a: \udc80\n",
}


@needs_fast
@pytest.mark.parametrize("text", LEFT.values(), ids=LEFT.keys())
def test_what_the_c_part_leaves_goes_to_the_python_path(text: str) -> None:
    assert _fast(text) is loader._BAIL
    doc = loader.load_text(text, "f.yaml")  # the Python path, through the public entry
    want = _python(text)
    assert [str(e) for e in doc.errors] == [str(e) for e in want.errors]
    assert _same(doc.data, want.data)


@needs_fast
def test_too_many_values_are_left_to_the_python_path() -> None:
    text = "a: [" + ", ".join("x" for _ in range(yamltags.MAX_VALUES)) + "]\n"
    assert _fast(text) is loader._BAIL
    assert "more than" in str(loader.load_text(text, "f.yaml").errors[0])


@needs_fast
def test_an_alias_is_a_fresh_copy_as_on_the_python_path() -> None:
    data = loader.load_text("a: &x {b: [1]}\nc: *x\nd: *x\n", "f.yaml").data
    assert data["a"] == data["c"] == data["d"] == {"b": [1]}
    assert data["a"] is not data["c"] and data["c"]["b"] is not data["d"]["b"]


@needs_fast
def test_the_deepest_alias_allowed_on_the_python_path_is_allowed_here() -> None:
    inner = "[" * 10 + "]" * 10
    left = []
    for outer in (52, 53, 54):  # the copy's deepest list lands at depth outer + 10 (limit 64)
        text = f"a: &x {inner}\nb: " + "[" * outer + "*x" + "]" * outer + "\n"
        got, want = _fast(text), _python(text)
        assert (got is loader._BAIL) == bool(want.errors), outer
        assert got is loader._BAIL or _same(got, want.data)
        left.append(got is loader._BAIL)
    assert left == [False, False, True]


@needs_fast
def test_positions_of_a_fast_document_come_from_the_node_tree_when_asked() -> None:
    text = "id: rb-001\nsteps:\n  - {id: a, with: {n: 1}}\n"
    doc = loader.load_text(text, "f.yaml")
    assert doc.source._root is None  # nothing composed yet: a valid file never pays for positions
    assert doc.source.position(("steps", 0, "with", "n")) == (3, 23)
    assert str(doc.source.error(("steps", 0, "id"), "bad")) == "f.yaml:3:10: steps[0].id: bad"


@needs_fast
def test_fuzzed_runbooks_read_the_same_on_both_paths() -> None:
    """Seeded mutants of the shipped runbooks (the fuzz campaign's mutations): every one the C part
    takes gives the Python path's data with no error, every other one the Python path's errors."""
    r = random.Random(20261130)
    taken = left = 0
    for _ in range(600):
        data = r.choice(RUNBOOK_FILES).read_bytes()
        for mutation in r.sample(MUTATIONS, r.choice((1, 1, 2))):
            data = mutation(r, data)
        text, _errors = loader.decode(data, "m.yaml")
        if text is None:
            continue
        if _agree(text):
            taken += 1
        else:
            left += 1
    assert taken > 100 and left > 100  # both sides exercised


SCALARS = ["a", "id", "title", "<<", "=", "~", "null", "Null", "", "yes", "No", "on", "OFF", "y", "n",
           "true", "False", "0", "-0", "+1", "007", "08", "0o7", "0b101", "0x1F", "-0x1f", "1_000",
           "1:30", "-1:30:00", "190:20:30.15", "1.5", "-.5", "1e3", "1.0e+3", ".inf", "-.Inf",
           ".nan", "2026-01-01", "2026-1-1", "2026-01-01T10:00:00Z", "2026-01-01 10:00:00.5 +02:00",
           "2026-13-45", "123456789012345678", "1234567890123456789", "9" * 101, "'q'", '"d"',
           "'yes'", '"1"', "\"\\u00e9\"", "é", "-", "--", "x y", "t-1", "{{ params.x }}",
           "\"{{ a }}\""]


def _random_doc(r: random.Random) -> str:
    """A small YAML document of edge-case keys and scalars, block and flow."""
    def value(d: int) -> str:
        pick = r.random()
        if d < 3 and pick < 0.15:
            return "[" + ", ".join(value(d + 1) for _ in range(r.randrange(4))) + "]"
        if d < 3 and pick < 0.3:
            return "{" + ", ".join(f"{r.choice(SCALARS) or 'k'}: {value(d + 1)}"
                                   for _ in range(r.randrange(3))) + "}"
        return r.choice(SCALARS)
    lines = []
    for _ in range(r.randrange(1, 6)):
        key = r.choice(SCALARS) or "k"
        if r.random() < 0.2:
            lines.append(f"{key}:")
            lines += [f"  - {value(1)}" for _ in range(r.randrange(1, 3))]
        else:
            lines.append(f"{key}: {value(0)}")
    return "\n".join(lines) + "\n"


@needs_fast
def test_generated_documents_of_edge_case_scalars_read_the_same_on_both_paths() -> None:
    r = random.Random(7)
    taken = 0
    for _ in range(3000):
        taken += _agree(_random_doc(r))
    assert taken > 200  # ~260: most documents hold something only the Python path names
