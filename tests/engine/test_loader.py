"""The located YAML loader: positions of values and keys, duplicate keys, syntax errors, safe tags."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsctl import loader

DATA = Path(__file__).parent / "data"

TEXT = """\
id: rb-001
diagnose:
  - id: probe
    with: {value: [1, 2]}
    expect:
      - that: "result.ok"
"""


def test_values_and_keys_have_their_own_positions() -> None:
    doc = loader.load_text(TEXT, "f.yaml")
    assert doc.errors == []
    assert doc.data == {"id": "rb-001", "diagnose": [
        {"id": "probe", "with": {"value": [1, 2]}, "expect": [{"that": "result.ok"}]}]}
    v, k = doc.source.values, doc.source.keys
    assert v[("id",)] == (1, 5)
    assert k[("id",)] == (1, 1)
    assert k[("diagnose",)] == (2, 1)
    assert v[("diagnose", 0)] == (3, 5)
    assert v[("diagnose", 0, "id")] == (3, 9)
    assert k[("diagnose", 0, "with")] == (4, 5)
    assert v[("diagnose", 0, "with")] == (4, 11)
    assert k[("diagnose", 0, "with", "value")] == (4, 12)
    assert v[("diagnose", 0, "with", "value", 1)] == (4, 23)
    assert v[("diagnose", 0, "expect", 0, "that")] == (6, 15)


def test_locate_formats_the_path_and_falls_back_to_the_nearest_ancestor() -> None:
    src = loader.load_text(TEXT, "f.yaml").source
    assert str(src.locate(("diagnose", 0, "with", "value", 1))) == "f.yaml:4:23: diagnose[0].with.value[1]"
    assert str(src.locate(("diagnose", 0, "with"), key=True)) == "f.yaml:4:5: diagnose[0].with"
    # a key that is not in the file (e.g. a missing argument) points at its parent mapping
    assert str(src.locate(("diagnose", 0, "with", "nope"))) == "f.yaml:4:11: diagnose[0].with.nope"


def test_duplicate_key_is_reported_at_the_second_key() -> None:
    doc = loader.load_text("a: 1\nb:\n  c: 1\n  c: 2\n", "d.yaml")
    assert [str(e) for e in doc.errors] == ["d.yaml:4:3: b.c: duplicate key 'c' (first defined at line 3)"]


def test_third_duplicate_names_the_first_definition() -> None:
    doc = loader.load_text("a: 1\na: 2\na: 3\n", "d.yaml")
    assert [str(e) for e in doc.errors] == [
        "d.yaml:2:1: a: duplicate key 'a' (first defined at line 1)",
        "d.yaml:3:1: a: duplicate key 'a' (first defined at line 1)",
    ]


def test_duplicate_key_in_a_file() -> None:
    path = str(DATA / "invalid" / "rb-218-duplicate-key.yaml")
    doc = loader.load_file(path)
    assert [str(e) for e in doc.errors] == [
        f"{path}:10:5: diagnose[0].title: duplicate key 'title' (first defined at line 9)"]


@pytest.mark.parametrize(("text", "where", "problem"), [
    ("a: [1\n", "e.yaml:2:1", "expected ',' or ']'"),
    ("a: 1\n\tb: 2\n", "e.yaml:2:1", "tab character"),
    ("a: 1\n b: 2\n", "e.yaml:2:3", "mapping values are not allowed"),
])
def test_syntax_errors_are_located(text: str, where: str, problem: str) -> None:
    doc = loader.load_text(text, "e.yaml")
    assert doc.data is None
    [err] = doc.errors
    assert str(err).startswith(f"{where}: invalid YAML: ")
    assert problem in str(err)


def test_empty_and_unreadable_files() -> None:
    assert [str(e) for e in loader.load_text("", "e.yaml").errors] == ["e.yaml:1:1: empty file"]
    [err] = loader.load_file("/nonexistent/rb-999.yaml").errors
    # located like every other error (CI annotators parse file:line:col)
    assert str(err) == "/nonexistent/rb-999.yaml:1:1: cannot read: No such file or directory"


@pytest.mark.parametrize("text", [
    'summary: !!python/name:os.system ""\n',
    "summary: !!python/object:os.system x\n",
    "summary: !custom 3\n",
])
def test_unsafe_or_unknown_scalar_tags_are_located_errors(text: str) -> None:
    """A tag the safe loader does not know is a runbook error at its position, not a crash."""
    doc = loader.load_text(text, "t.yaml")
    assert doc.errors, "the tag must be rejected"
    assert str(doc.errors[0]).startswith("t.yaml:1:10: summary: ")


@pytest.mark.parametrize("text", [
    'summary: !!python/object/apply:os.system ["touch /tmp/opsctl-pwned"]\n',
    "summary: !!python/object/new:os.system {}\n",
])
def test_python_tags_on_collections_are_rejected(text: str) -> None:
    """Only the safe loader's tags are allowed; a python/* tag must not be silently dropped."""
    doc = loader.load_text(text, "t.yaml")
    assert [e.location.path for e in doc.errors] == ["summary"]
    assert "python/object" in doc.errors[0].message


def test_merge_keys_are_merged_or_rejected_with_one_clear_error() -> None:
    """`<<: *defaults` is standard safe YAML; either merge it like yaml.safe_load, or reject it with
    a single error at the `<<` key that says merge keys are not supported."""
    text = "base: &b {action: core.echo, with: {value: 1}}\ndiagnose:\n  - <<: *b\n    id: a\n"
    doc = loader.load_text(text, "m.yaml")
    if not doc.errors:
        assert doc.data["diagnose"] == [{"action": "core.echo", "with": {"value": 1}, "id": "a"}]
        return
    assert len(doc.errors) == 1, [str(e) for e in doc.errors]
    assert str(doc.errors[0]).startswith("m.yaml:3:5: diagnose[0]")
    assert "merge" in doc.errors[0].message


def test_aliases_are_expanded() -> None:
    text = "base: &b {value: 1}\ndiagnose:\n  - id: a\n    with: *b\n"
    doc = loader.load_text(text, "a.yaml")
    assert doc.errors == []
    assert doc.data["diagnose"][0]["with"] == {"value": 1}


def test_plain_keys_are_names_not_yaml_1_1_booleans_or_numbers() -> None:
    """The "Norway problem": `no:`, `on:`, `yes:` are keys named so, not False/True/True (an
    environment, a label or a parameter called `no` was unreachable as "False")."""
    doc = loader.load_text("no: 1\non: 2\nyes: 3\n0x1F: 4\n1_000: 5\n2024-01-01: 6\n'off': 7\n", "k.yaml")
    assert doc.errors == []
    assert list(doc.data) == ["no", "on", "yes", "0x1F", "1_000", "2024-01-01", "off"]
    assert doc.source.keys[("0x1F",)] == (4, 1)
    # a plain key and the same text quoted are one key: a duplicate, as a reader expects
    dup = loader.load_text("yes: 1\n'yes': 2\n", "d.yaml")
    assert [str(e) for e in dup.errors] == ["d.yaml:2:1: yes: duplicate key 'yes' (first defined at line 1)"]
    # values keep YAML 1.1's typing (the schema names what is wrong with them); a key of nothing
    # is still refused
    assert loader.load_text("a: no\n", "v.yaml").data == {"a": False}
    assert [e.message for e in loader.load_text("~: 1\n", "n.yaml").errors] == ["unsupported mapping key '~'"]


def test_an_environment_named_no_is_selectable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from opsctl import config

    (tmp_path / "opsctl.yaml").write_text("environments:\n  no:\n    settings: {namespace: oslo}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPSCTL_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    env = config.load_environment("no")
    assert (env.name, env.settings) == ("no", {"namespace": "oslo"})


@pytest.mark.parametrize(("text", "error"), [
    ("a: {b: 1\nc: 2\n", "f.yaml:2:2: invalid YAML: while parsing a flow mapping (from line 1, column 4): "
                         "did not find expected ',' or '}'"),
    ("a: &x 1\nb: &x 2\n", "f.yaml:2:4: invalid YAML: duplicate anchor (first defined at line 1, column 4)"),
    ("a:\n\tb: 1\n", "f.yaml:2:1: invalid YAML: while scanning for the next token: found character that "
                     "cannot start any token: a tab; YAML indents with spaces"),
    ("a: b: c\n", "f.yaml:1:5: invalid YAML: mapping values are not allowed in this context"),
])
def test_syntax_errors_name_where_the_construct_began_and_tabs(text: str, error: str) -> None:
    assert [str(e) for e in loader.load_text(text, "f.yaml").errors] == [error]
