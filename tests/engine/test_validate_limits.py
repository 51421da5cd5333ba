"""Each input that used to crash, hang or exhaust memory is now a located, one-line error."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from opsctl import catalog, loader, semantic, templating, validation

REPO = Path(__file__).resolve().parents[2]
HEAD = "id: rb-900\ntitle: t\nseverity: P3\nsummary: s\n"
STEP = "diagnose:\n  - id: probe\n    action: core.echo\n    with: {value: %s}\n"


def bomb(levels: int) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def errors_of(data: bytes | str, name: str = "rb-900-x.yaml") -> list[str]:
    raw = data.encode() if isinstance(data, str) else data
    errors = catalog.check_bytes(raw, name, build=False)[1]
    lines = [str(e) for e in errors]
    for line in lines:
        assert "\n" not in line and re.match(rf"^{re.escape(name)}:\d+:\d+: ", line), line
    return lines


# ---- YAML ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("levels", [6, 9])
def test_alias_bomb_is_refused_while_it_is_built(levels: int) -> None:
    tracemalloc.start()
    try:
        [line] = errors_of(bomb(levels))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "more than 100000 values after expanding YAML aliases" in line
    assert peak < 100 * 2**20  # the expansion stops at the budget: tens of MB, not gigabytes


def test_an_alias_bomb_is_located_alike_whatever_the_process_read_before() -> None:
    # the memo of short plain scalars (yamltags._TAG_MEMO) is process-wide and stops growing at
    # 10,000 entries: a bomb's scalars in the memo took the inline path, which counted without
    # checking, so the error moved to a later node once a long-lived process had filled the memo
    # (CI: another column for the same fuzz mutant in the CLI and in the pytest worker)
    from opsctl import yamltags

    saved = dict(yamltags._TAG_MEMO)
    try:
        yamltags._TAG_MEMO.clear()  # a fresh process: the bomb's scalars are memoized as they come
        fresh = errors_of(bomb(7))
        yamltags._TAG_MEMO.clear()
        yamltags._TAG_MEMO.update({f"filler-{i}": "tag:yaml.org,2002:str" for i in range(10_000)})
        full = errors_of(bomb(7))  # a long-lived one: the memo is full, nothing more is memoized
    finally:
        yamltags._TAG_MEMO.clear()
        yamltags._TAG_MEMO.update(saved)
    assert len(fresh) == 1 and "more than 100000 values after expanding YAML aliases" in fresh[0]
    assert full == fresh


def test_recursive_alias() -> None:
    lines = errors_of(HEAD + "triggers: &t [a, *t]\n" + STEP % "1")
    # an alias has no position of its own in the composed tree: the anchored node's is given
    assert lines[0] == "rb-900-x.yaml:5:11: triggers[1]: recursive YAML alias"


@pytest.mark.parametrize(("text", "where", "message"), [
    (HEAD + "triggers: " + "[" * 500 + "]" * 500 + "\n", "5:74", "nested more than 64 levels deep"),
    (HEAD + "triggers: " + "[" * 5000 + "]" * 5000 + "\n", "5:1010", "exceeded maximum nesting depth"),
    (HEAD + "x:\n" + "".join("  " * i + "k:\n" for i in range(1, 500)), "69:129", "nested more than 64"),
    (HEAD + "retries: " + "9" * 5000 + "\n", "5:10", "int literal of 5000 characters (the limit is 100)"),
    (HEAD + "retries: 1.0e+999\n", "5:10", "'1.0e+999': numbers must be finite"),
    (HEAD + "retries: .nan\n", "5:10", "numbers must be finite"),
    (HEAD + "title: " + "x" * 100_001 + "\n", "5:8", "string of 100001 characters (the limit is 100000)"),
    (HEAD + "retries: !!int zz\n", "5:10", "'zz' is not a valid int"),
    (HEAD + "flag: !!bool maybe\n", "5:7", "'maybe' is not a valid bool"),
    (HEAD + "x: !!set {a: null}\n", "5:4", "unsupported YAML tag 'tag:yaml.org,2002:set' on a mapping"),
])
def test_size_and_depth_caps_are_located(text: str, where: str, message: str) -> None:
    lines = errors_of(text)
    assert any(line.startswith(f"rb-900-x.yaml:{where}: ") and message in line for line in lines), lines


def test_a_file_over_the_size_limit_is_not_parsed() -> None:
    assert errors_of(HEAD + "#" * (loader.MAX_FILE_BYTES + 1)) == [
        f"rb-900-x.yaml:1:1: file larger than {loader.MAX_FILE_BYTES} bytes: not a runbook"]


# ---- encodings and characters --------------------------------------------------------------------

def test_not_utf8_names_the_byte_as_line_and_column() -> None:
    assert errors_of(b"id: rb-900\ntitle: caf\xe9 ok\n") == [
        "rb-900-x.yaml:2:11: not UTF-8 text: byte 0xe9 at offset 21 (invalid continuation byte)"]
    # the column counts characters: a valid multi-byte character before the bad byte is one column
    assert errors_of("id: rb-900\ntitle: é".encode() + b"\xff\n")[0].startswith("rb-900-x.yaml:2:9: ")


@pytest.mark.parametrize(("encoding", "bom"), [("utf-16", "FF FE"), ("utf-32", "FF FE 00 00")])
def test_utf16_and_utf32_are_located_errors(encoding: str, bom: str) -> None:
    [line] = errors_of((HEAD + STEP % "1").encode(encoding))
    assert line.startswith("rb-900-x.yaml:1:1: UTF-")
    assert f"(byte order mark {bom})" in line and "save runbooks as UTF-8" in line


def test_a_utf8_bom_is_accepted() -> None:
    assert errors_of(b"\xef\xbb\xbf" + (HEAD + STEP % "1").encode()) == []


@pytest.mark.parametrize(("char", "where"), [("\x07", "2:11"), ("\x00", "2:11"), ("\x1b", "2:11")])
def test_control_characters_are_located(char: str, where: str) -> None:
    [line] = errors_of(f"id: rb-900\ntitle: bad{char}x\n")
    assert line.startswith(f"rb-900-x.yaml:{where}: invalid YAML: unacceptable character #x00"), line


def test_errors_stay_on_one_line() -> None:
    lines = errors_of(HEAD + '"bad\\nkey\\rwith\\u2028breaks": 1\n' + STEP % "1")
    assert lines == ["rb-900-x.yaml:5:1: ['bad\\nkey\\rwith\\u2028breaks']: unknown key "
                     "'bad\\nkey\\rwith\\u2028breaks'"]
    assert loader.one_line("a\nb\r\n c\u2028d\te") == "a b c d e"


# ---- Jinja ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "message"), [
    ('"{{ params.x | durration }}"', "unknown filter 'durration' (did you mean 'duration'?)"),
    ('"{{ params.x is nosuchtest }}"', "unknown test 'nosuchtest'"),
    ('"{{ ' + "(" * 80 + "1" + ")" * 80 + ' }}"', "brackets nested more than 32 deep"),
    ('"{{ ' + "not " * 3000 + 'x }}"', "invalid Jinja template: nested too deeply"),
    ('"{% include \'other.j2\' %}"', "a runbook template cannot include or import other templates"),
    ('"{{ ' + "x" * 70_000 + ' }}"', "Jinja template of 70006 characters (the limit is 65536)"),
])
def test_jinja_problems_are_located(value: str, message: str) -> None:
    lines = errors_of(HEAD + STEP % value)
    assert any(line.startswith("rb-900-x.yaml:8:19: diagnose[0].with.value: ") and message in line
               for line in lines), lines


def test_validation_never_evaluates_a_template() -> None:
    """`{{ 'a' * 1000000000 }}` used to be folded (evaluated) while compiling: 1 GB per expression."""
    tracemalloc.start()
    try:
        for text in ("'a' * 1000000000", "'x' | center(1000000000)", "'x' | indent(1000000000)",
                     "'%0999999999d' | format(1)"):
            templating.analyse("{{ " + text + " }}", expression=False)
            templating.analyse(text, expression=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20


@pytest.mark.parametrize("expr", ["'a' * 1000000000", "[1] * 1000000000", "'x' | center(1000000000)",
                                  "'x'.ljust(1000000000)", "'{:>999999999}'.format(1)",
                                  "'%0999999999d' % 1", "2 ** 100000000"])
def test_running_a_template_refuses_huge_results(expr: str) -> None:
    with pytest.raises(templating.TemplateError, match="not allowed in the sandbox"):
        templating.evaluate(expr, {})
    with pytest.raises(templating.TemplateError, match="not allowed in the sandbox"):
        templating.render("{{ " + expr + " }}!", {})


def test_ordinary_templates_still_work() -> None:
    assert templating.evaluate("'ab' * 3", {}) == "ababab"
    assert templating.evaluate("2 ** 10", {}) == 1024
    assert templating.render("{{ '%05d' % 42 }} {{ 'x' | center(5) }}|", {}) == "00042   x  |"


# ---- isolation -----------------------------------------------------------------------------------

def test_a_crash_inside_one_file_is_that_files_error(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    monkeypatch.setenv("OPSCTL_STATE_DIR", str(tmp_path / "state"))
    good, bad = tmp_path / "rb-901-a.yaml", tmp_path / "rb-902-b.yaml"
    good.write_text("id: rb-901\ntitle: t\nseverity: P9\nsummary: s\n" + STEP % "1")
    bad.write_text("id: rb-902\ntitle: t\nseverity: P3\nsummary: s\n" + STEP % "1")
    real_run = semantic.Checker.run

    def run(self: semantic.Checker) -> None:
        if self.doc.source.file == str(bad):
            raise RuntimeError("a bug")
        real_run(self)

    monkeypatch.setattr(semantic.Checker, "run", run)
    errors = [str(e) for e in validation.validate_files([str(bad), str(good)], jobs=1, use_cache=False)]
    assert errors[0].startswith(f"{bad}:1:1: internal error while checking this file: RuntimeError: a bug")
    assert errors[1].startswith(f"{good}:3:11: severity: expected one of P0, P1, P2, P3, P4")
    assert "RuntimeError: a bug" in (tmp_path / "state" / "crash.log").read_text()


# ---- through the CLI: exit 2, located, bounded memory --------------------------------------------

def _cli(args: list[str], tmp_path: Path) -> tuple[int, str, str, int]:
    """(exit code, stdout, stderr, peak RSS in MB) of `python -m opsctl ARGS`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSCTL_")}
    env.update({"OPSCTL_STATE_DIR": str(tmp_path / "state"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
                "XDG_CONFIG_HOME": str(tmp_path / "cfg")})
    out, err, rss = tmp_path / "out", tmp_path / "err", tmp_path / "rss"
    with open(out, "w") as o, open(err, "w") as e:
        code = subprocess.call([sys.executable, "-c", _PEAK, str(rss), *args], stdout=o, stderr=e, env=env,
                               stdin=subprocess.DEVNULL, cwd=tmp_path)
    return code, out.read_text(), err.read_text(), int(rss.read_text()) // 1024


# The peak RSS of `python -m opsctl ARGS` alone.  wait4() on a child that subprocess started with
# vfork reports the *parent's* high-water mark too (Linux folds the old mm's peak into the process's
# at exec, and a vfork child's old mm is the parent's): a large pytest worker read as 300 MB of
# validate.  A small interpreter forks for real and execs opsctl, so the peak is opsctl's own.
_PEAK = """\
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, "-m", "opsctl", *sys.argv[2:]])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_validate_of_every_crash_class_exits_2_within_bounded_memory(tmp_path: Path) -> None:
    cases = {
        "bomb9": bomb(9),
        "deep-yaml": HEAD + "triggers: " + "[" * 900 + "]" * 900 + "\n",
        "deep-jinja": HEAD + STEP % ('"{{ ' + "(" * 500 + "1" + ")" * 500 + ' }}"'),
        "fold": HEAD + STEP % "\"{{ 'a' * 1000000000 }}\"",
        "filter": HEAD + STEP % '"{{ params.x | durration }}"',
        "bigint": HEAD + "retries: " + "9" * 5000 + "\n" + STEP % "1",
        "utf16": (HEAD + STEP % "1").encode("utf-16"),
    }
    (tmp_path / "rb").mkdir()
    for name, content in cases.items():
        data = content if isinstance(content, bytes) else content.encode()
        (tmp_path / "rb" / f"rb-900-{name}.yaml").write_bytes(data)
    code, out, err, peak_mb = _cli(["validate", "-j", "1", "rb"], tmp_path)
    assert code == 2, err
    assert "internal error" not in out + err and "Traceback" not in out + err
    files = {line.split(":", 1)[0] for line in out.splitlines()}
    # every file is reported, except the constant-folding one: it is valid, and no longer costs 3 GB
    assert files == {f"rb/rb-900-{n}.yaml" for n in cases if n != "fold"}, out
    assert all(re.match(r"^rb/rb-900-[\w-]+\.yaml:\d+:\d+: ", line) for line in out.splitlines()), out
    assert peak_mb < 200, f"peak RSS {peak_mb} MB"


def test_run_on_a_broken_file_is_the_same_located_error(tmp_path: Path) -> None:
    path = tmp_path / "rb-900-bomb.yaml"
    path.write_text(HEAD + bomb(9) + STEP % '"{{ params.x | durration }}"')
    code, out, err, _ = _cli(["run", str(path), "--dry-run"], tmp_path)
    assert code == 2
    assert out == ""
    assert "internal error" not in err
    assert err.splitlines()[0].startswith(f"{path}:") and "alias" in err.splitlines()[0]


def test_guarded_filters_keep_their_jinja_calling_convention() -> None:
    """wordwrap is a pass_environment filter: its guard must still receive the environment."""
    assert templating.render("{{ 'aaa bbb' | wordwrap(4) }}|{{ [1, 2, 3] | batch(2) | list }}|"
                             "{{ 'a\nb' | indent(2) }}", {}) == "aaa\nbbb|[[1, 2], [3]]|a\n  b"
