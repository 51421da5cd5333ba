"""Finding runbooks and turning files into validated Runbook objects.

Search order for an id such as ``rb-006``: ``./runbooks``, the directories in
``OPSCTL_RUNBOOK_PATH`` (os.pathsep-separated), then the runbooks shipped inside the package.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from opsctl.errors import RunbookError, UsageError, ValidationFailed

if TYPE_CHECKING:
    from opsctl.model import Runbook

_ID_LINE = re.compile(r"^id:\s*['\"]?([a-z0-9][a-z0-9_-]*)", re.M)
# beside a runbook, not one: `rb-042.rehearsal.yaml` (opsctl rehearse)
NOT_RUNBOOKS = (".rehearsal.yaml", ".rehearsal.yml")
_TITLE_LINE = re.compile(r"^title:\s*['\"]?(.+?)['\"]?\s*$", re.M)


def search_dirs() -> list[Path]:
    dirs = [Path.cwd() / "runbooks"]
    dirs += [Path(p) for p in os.environ.get("OPSCTL_RUNBOOK_PATH", "").split(os.pathsep) if p]
    dirs.append(Path(__file__).parent / "runbooks")
    return dirs


def runbook_files(dirs: list[Path] | None = None) -> list[Path]:
    """Every runbook file, first directory wins for a given file name."""
    seen: dict[str, Path] = {}
    for d in dirs if dirs is not None else search_dirs():
        if d.is_dir():
            for f in sorted(d.glob("*.y*ml")):
                if f.suffix in (".yaml", ".yml") and not f.name.endswith(NOT_RUNBOOKS):
                    seen.setdefault(f.name, f)
    return list(seen.values())


@dataclass(frozen=True)
class Entry:
    id: str
    title: str
    path: Path


def quick_index() -> list[Entry]:
    """Ids and titles without parsing YAML (shell completion must be instant)."""
    out: dict[str, Entry] = {}
    for f in runbook_files():
        try:
            with open(f, "rb") as fh:  # the head is enough: id and title are top-level keys
                text = fh.read(65536).decode("utf-8", errors="replace")
        except OSError:
            continue
        m = _ID_LINE.search(text)
        if m and m.group(1) not in out:
            t = _TITLE_LINE.search(text)
            out[m.group(1)] = Entry(m.group(1), t.group(1) if t else "", f)
    return sorted(out.values(), key=lambda e: e.id)


def resolve(ref: str) -> Path:
    """A file path, or a runbook id looked up in the search path."""
    p = Path(ref)
    if p.suffix in (".yaml", ".yml") or os.sep in ref:
        if not p.is_file():
            raise UsageError(f"runbook file not found: {ref}")
        return p
    for entry in quick_index():
        if entry.id == ref.lower():
            return entry.path
    from opsctl.schema import did_you_mean

    known = [e.id for e in quick_index()]
    raise UsageError(f"no runbook with id {ref!r}{did_you_mean(ref, known)}; searched "
                     + ", ".join(str(d) for d in search_dirs())
                     + ". `opsctl list` shows the known runbooks.")


def check_file(path: str) -> tuple[Runbook | None, list[RunbookError]]:
    """Load + schema + semantic checks; a Runbook only when there is no error."""
    from opsctl import loader

    data, errors = loader.read(path)
    if data is None:
        return None, errors
    return check_bytes(data, path)


def check_bytes(data: bytes, path: str, *, build: bool = True) -> tuple[Runbook | None,
                                                                        list[RunbookError]]:
    """Every error of one file, sorted by position, each on one line; never raises: whatever goes
    wrong inside (a bug, a resource limit) is a located error of this file, not of the run."""
    from opsctl.errors import Location
    from opsctl.loader import one_line

    try:
        runbook, errors = _check(data, path, build)
    except RecursionError:
        errors = [RunbookError("nested too deeply to check", Location(path, 1, 1))]
        runbook = None
    except MemoryError:
        errors = [RunbookError("too large to check (out of memory)", Location(path, 1, 1))]
        runbook = None
    except Exception as e:
        where = _save_traceback()
        errors = [RunbookError(f"internal error while checking this file: {type(e).__name__}: {e} "
                               f"({where}; please report it)", Location(path, 1, 1))]
        runbook = None
    for i, err in enumerate(errors):
        if one_line(err.message) != err.message:
            errors[i] = RunbookError(one_line(err.message), err.location)
    return runbook, errors


def _check(data: bytes, path: str, build: bool) -> tuple[Runbook | None, list[RunbookError]]:
    from opsctl import actions, loader, model, schema, semantic

    doc = loader.load_bytes(data, path)
    if doc.data is None:
        return None, doc.errors
    errors = list(doc.errors)
    errors += schema.validate_structure(doc, actions.load_all())
    sem_errors, deps = semantic.check(doc)
    seen = {(e.location.line, e.location.column, e.message) for e in errors}
    errors += [e for e in sem_errors
               if (e.location.line, e.location.column, e.message) not in seen]
    if errors:
        return None, sorted(errors, key=lambda e: (e.location.line, e.location.column))
    return (model.build(doc, deps, data) if build else None), []


def _save_traceback() -> str:
    import traceback

    from opsctl.audit import state_dir

    path = state_dir() / "crash.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(traceback.format_exc() + "\n")
        return f"the traceback is in {path}"
    except OSError:
        return "the traceback could not be saved"


def load(ref: str) -> Runbook:
    runbook, errors = check_file(str(resolve(ref)))
    if errors:
        raise ValidationFailed(errors)
    assert runbook is not None
    return runbook


def expand_paths(paths: list[str]) -> list[str]:
    """Files as given; directories -> their *.yaml / *.yml files (recursively, symlinked
    directories not followed, so a link loop cannot hang the walk)."""
    files: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            found = []
            for root, dirs, names in os.walk(p, onerror=None, followlinks=False):
                dirs.sort()
                found += [os.path.join(root, n) for n in names
                          if n.endswith((".yaml", ".yml")) and not n.endswith(NOT_RUNBOOKS)]
            files += sorted(found)
        else:
            files.append(p)
    return files
