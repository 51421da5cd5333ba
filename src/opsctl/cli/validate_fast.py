"""`opsctl validate` itself, shared by the Typer command (``cli.validate_cmd``) and the fast path
without Typer (``cli.fastpath.VALIDATE``: a command line of paths and ``-o``, ``-j``,
``--cache``/``--no-cache`` in Click's spellings runs before Typer is imported; anything else, such as
``--help`` or ``--alerts``, goes to the Typer CLI): the command CI runs on every merge starts in a
third of the time.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


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
