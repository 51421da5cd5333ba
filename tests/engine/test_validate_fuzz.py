"""A seeded fuzz campaign over `opsctl validate`: a few hundred mutants of the shipped runbooks.

Every mutant must give exit 0 or 2 (never an internal error), every error must be located
(``file:line:col: ...``) and fit on one line, and no file may take long (a generous bound: this is
not a benchmark).  The files are checked in-process (fast) and once through the CLI (exit code,
output format, a broken file hiding no other).
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from opsctl import validation
from tests.fixtures.core import RUNBOOK_FILES

REPO = Path(__file__).resolve().parents[2]
SEED = 20261129
N_FILES = 300
PER_FILE_LIMIT = 10.0  # seconds; the caps make every file take milliseconds
LOCATED = re.compile(r"^(?P<file>[^\n]+?):(?P<line>[1-9]\d*):(?P<col>[1-9]\d*): \S.*$")

Mutation = Callable[[random.Random, bytes], bytes]


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def _delete_line(r: random.Random, data: bytes) -> bytes:
    lines = _lines(data)
    del lines[r.randrange(len(lines))]  # split() gives at least one line
    return b"\n".join(lines)


def _duplicate_line(r: random.Random, data: bytes) -> bytes:  # duplicated keys, mostly
    lines = _lines(data)
    i = r.randrange(len(lines))
    lines.insert(i, lines[i])
    return b"\n".join(lines)


VALUES = [b"123", b"-1", b"1.5", b"true", b"null", b"[1, 2]", b"{a: 1}", b"''", b".nan", b"-.inf",
          b"0x1F", b"1:30", b"2024-01-01", b"9" * 5000, b"1e999", b"~", b"!!int zz", b"!!bool maybe",
          b"!!float x", b"!!timestamp junk", b"'{{ params.nope }}'", b"=", b"<<"]


def _retype(r: random.Random, data: bytes) -> bytes:
    lines = _lines(data)
    candidates = [i for i, line in enumerate(lines) if b": " in line] or [0]
    i = r.choice(candidates)
    key = lines[i].split(b": ", 1)[0]
    lines[i] = key + b": " + r.choice(VALUES)
    return b"\n".join(lines)


def _indent(r: random.Random, data: bytes) -> bytes:
    lines = _lines(data)
    i = r.randrange(len(lines))
    lines[i] = b" " * r.choice((1, 3, 7)) + lines[i] if r.random() < 0.5 else lines[i].lstrip()
    return b"\n".join(lines)


def _tab(r: random.Random, data: bytes) -> bytes:
    lines = _lines(data)
    candidates = [i for i, line in enumerate(lines) if line.startswith(b"  ")] or [0]
    i = r.choice(candidates)
    lines[i] = b"\t" + lines[i].lstrip(b" ")
    return b"\n".join(lines)


def _unknown_action(r: random.Random, data: bytes) -> bytes:
    return re.sub(rb"action: (\S+)", lambda m: b"action: " + m.group(1)[::-1], data, count=r.randint(1, 3))


JINJA = [b"{{ params.x | durration }}", b"{{ result is nosuchtest }}",
         b"{{ " + b"(" * 80 + b"1" + b")" * 80 + b" }}", b"{{ " + b"(" * 3000 + b" }}",
         b"{{ 'a' * 1000000000 }}", b"{{ 'x' | center(1000000000) }}", b"{{ " + b"not " * 3000 + b"x }}",
         b"{{ a" + b".b" * 3000 + b" }}", b"{% include 'x' %}", b"{{ steps. }}", b"{% for %}",
         b"{{ 10 ** 10 ** 10 }}", b"{{ lipsum(100000) }}", b"{{ x['", b"{% raw %}"]


def _jinja(r: random.Random, data: bytes) -> bytes:
    expr = r.choice(JINJA).replace(b'"', b"'")
    return re.sub(rb'"\{\{[^"\n]*\}\}"', lambda m: b'"' + expr + b'"', data, count=r.randint(1, 2))


def _deep(r: random.Random, data: bytes) -> bytes:
    n = r.choice((50, 70, 500, 1200, 5000))
    if r.random() < 0.5:
        return data + b"\nextra: " + b"[" * n + b"]" * n + b"\n"
    return data + b"\nextra:\n" + b"".join(b"  " * i + b"k:\n" for i in range(1, n // 10)) + b"\n"


def _aliases(r: random.Random, data: bytes) -> bytes:
    levels = r.choice((3, 6, 9))
    bomb = [b"a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        refs = b", ".join([f"*a{i - 1}".encode()] * 9)
        bomb.append(f"a{i}: &a{i} [".encode() + refs + b"]")
    tail = [b"x-recursive: &r [*r]"] if r.random() < 0.3 else []
    use = f"summary: *a{levels - 1}".encode() if r.random() < 0.5 else b""
    return data + b"\n" + b"\n".join(bomb + tail) + b"\n" + use + b"\n"


def _huge(r: random.Random, data: bytes) -> bytes:
    size = r.choice((100_001, 300_000, 1_200_000))
    return data.replace(b"\nsummary:", b"\nsummary: " + b"x" * size + b"\nsummary2:", 1)


def _encoding(r: random.Random, data: bytes) -> bytes:
    kind = r.randrange(6)
    if kind == 0:
        return data.decode("utf-8", "replace").encode("utf-16")
    if kind == 1:
        return b"\xef\xbb\xbf" + data
    if kind == 2:
        return data.decode("utf-8", "replace").encode("utf-32")
    at = r.randrange(len(data) or 1)
    junk = r.choice((b"\xff", b"\xc3\x28", b"\x80\x80", b"\x07", b"\x00", b"\x1b[31m", b"\xe2\x80\xa8"))
    return data[:at] + junk + data[at:]


TAGS = [b"!!python/object/apply:os.system ['touch /tmp/opsctl-fuzz-pwned']", b"!!python/name:os.system ''",
        b"!!binary aGVsbG8=", b"!!set {a: null}", b"!custom 3", b"!!python/object:os.system {}", b"!!omap []"]


def _tag(r: random.Random, data: bytes) -> bytes:
    return re.sub(rb"(title|summary|value): [^\n]*", lambda m: m.group(1) + b": " + r.choice(TAGS), data,
                  count=r.randint(1, 2))


def _truncate(r: random.Random, data: bytes) -> bytes:
    return data[: r.randrange(len(data) or 1)]


MUTATIONS: list[Mutation] = [_delete_line, _duplicate_line, _retype, _indent, _tab, _unknown_action,
                             _jinja, _deep, _aliases, _huge, _encoding, _tag, _truncate]


def _corpus(root: Path) -> list[str]:
    r = random.Random(SEED)
    shipped = RUNBOOK_FILES
    files = []
    for i in range(N_FILES):
        src = r.choice(shipped)
        data = src.read_bytes()
        for mutation in r.sample(MUTATIONS, r.choice((1, 1, 2, 3))):
            data = mutation(r, data)
        path = root / f"m{i:03d}-{src.name}"
        path.write_bytes(data)
        files.append(str(path))
    return files


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return _corpus(tmp_path_factory.mktemp("fuzz"))


@pytest.fixture(scope="module")
def checked(corpus: list[str]) -> dict[str, tuple[float, list[str]]]:
    """Each file checked in this process: (seconds, error lines)."""
    out = {}
    for path in corpus:
        start = time.perf_counter()
        errors = validation.validate_files([path], jobs=1, use_cache=False)  # never raises
        out[path] = (time.perf_counter() - start, [str(e) for e in errors])
    return out


def test_every_mutant_gets_located_one_line_errors_in_bounded_time(
        checked: dict[str, tuple[float, list[str]]]) -> None:
    slow, unlocated, multiline, crashed = [], [], [], []
    rejected = 0
    for path, (seconds, errors) in checked.items():
        if seconds > PER_FILE_LIMIT:
            slow.append(path)
        rejected += bool(errors)
        for line in errors:
            if "\n" in line or "\r" in line:
                multiline.append(line)
            m = LOCATED.match(line)
            if not m or m.group("file") != path:
                unlocated.append(line)
            if "internal error" in line:
                crashed.append(line)
    assert not crashed, crashed[:5]
    assert not unlocated, unlocated[:5]
    assert not multiline, multiline[:5]
    assert not slow, slow
    assert rejected > N_FILES * 0.7  # the mutations do break most files (the test tests something)


def test_the_cli_reports_every_file_in_one_run(corpus: list[str], tmp_path: Path,
                                               checked: dict[str, tuple[float, list[str]]]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSCTL_")}
    env.update({"OPSCTL_STATE_DIR": str(tmp_path / "state"), "XDG_CACHE_HOME": str(tmp_path / "cache")})
    fuzz_dir = str(Path(corpus[0]).parent)
    proc = subprocess.run([sys.executable, "-m", "opsctl", "validate", "-j", "2", fuzz_dir],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "internal error" not in proc.stderr + proc.stdout
    lines = proc.stdout.splitlines()
    assert all(LOCATED.match(line) for line in lines), [x for x in lines if not LOCATED.match(x)][:5]
    in_process = [line for path in sorted(corpus) for line in checked[path][1]]
    assert lines == in_process  # the same errors of all files, in order, whatever the workers did
    bad = len({LOCATED.match(line).group("file") for line in lines})  # type: ignore[union-attr]
    assert proc.stderr.strip() == f"{N_FILES} file(s) checked, {len(lines)} error(s) in {bad} file(s)"
    assert not Path("/tmp/opsctl-fuzz-pwned").exists()
