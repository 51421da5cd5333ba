"""`opsctl validate` without Typer: the command CI runs on every merge starts in a third of the time.

``opsctl.__main__`` hands a command line starting with ``validate`` here first.  A command line
made only of paths and the options below (Click's spellings: ``-o json``, ``-ojson``,
``--output=json``, ``-j 2``, ``-j2``, ``--jobs=2``, ``--cache``/``--no-cache``, ``--``) runs here,
with the error boundary of ``cli.guard``; anything else (``--help``, ``--alerts``, a bad value,
an unknown option) returns to the Typer CLI, which answers exactly as before.  ``run`` is the
command itself, shared with ``cli.validate_cmd``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def parse(argv: list[str]) -> tuple[list[str], bool, int, bool] | None:
    """(paths, JSON output, jobs, use the cache), or None for the Typer CLI to handle."""
    paths: list[str] = []
    as_json, jobs, cache = False, 0, True
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            paths += argv[i:]
            break
        if not arg.startswith("-") or arg == "-":
            if arg == "-":
                return None
            paths.append(arg)
            continue
        if arg in ("--cache", "--no-cache"):
            cache = arg == "--cache"
            continue
        name, value = arg, None
        if arg.startswith("--") and "=" in arg:
            name, value = arg.split("=", 1)
        elif arg[:2] in ("-o", "-j") and len(arg) > 2:
            name, value = arg[:2], arg[2:]
        if name not in ("-o", "--output", "-j", "--jobs"):
            return None
        if value is None:
            if i >= len(argv):
                return None
            value, i = argv[i], i + 1
        if name in ("-o", "--output"):
            if value not in ("text", "json"):
                return None
            as_json = value == "json"
        else:
            if not value.isascii() or not value.isdigit():
                return None
            jobs = int(value)
    return paths, as_json, jobs, cache


def run(paths: list[str], *, as_json: bool, jobs: int, use_cache: bool) -> int:
    """Validate; every error on stdout (text: file:line:col: path: message; or one JSON list),
    the summary on stderr; 0 when clean, 2 on any error."""
    from opsctl.catalog import expand_paths
    from opsctl.errors import UsageError
    from opsctl.validation import validate_files

    targets = paths or (["runbooks"] if Path("runbooks").is_dir() else [])
    if not targets:
        raise UsageError("nothing to validate: give runbook files or directories "
                         "(no ./runbooks directory here)")
    files = expand_paths(targets)
    if not files:
        raise UsageError(f"no runbook files (*.yaml) in {', '.join(targets)}")
    errors = validate_files(files, jobs=jobs, use_cache=use_cache)
    if as_json:
        _out(json.dumps([e.as_dict() for e in errors], indent=2))
    else:
        for err in errors:
            _out(str(err))
        bad = len({e.location.file for e in errors})
        summary = f"{len(files)} file(s) checked, {len(errors)} error(s) in {bad} file(s)"
        _out(summary if errors else f"{len(files)} file(s) checked: all valid", err=True)
    return 2 if errors else 0


def _out(text: str, *, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")
    stream.flush()


def main(argv: list[str]) -> None:
    """Run and exit when ``argv`` (after ``validate``) is a plain command line; else return."""
    parsed = parse(argv)
    if parsed is None:
        return
    from opsctl.cli.guard import boundary

    paths, as_json, jobs, use_cache = parsed
    boundary(lambda: run(paths, as_json=as_json, jobs=jobs, use_cache=use_cache))
