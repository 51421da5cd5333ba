"""Finding runbooks and turning files into validated Runbook objects.

Search order for an id such as ``rb-006``: ``./runbooks``, the directories in
``OPSCTL_RUNBOOK_PATH`` (os.pathsep-separated), then the runbooks shipped inside the package.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsctl.errors import MAX_FILE_ERRORS, RunbookError, UsageError, ValidationFailed, caused_by_ctrl_c
from opsctl.fsread import read_regular

if TYPE_CHECKING:
    from collections.abc import Callable

    from opsctl.loader import Document
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
        try:  # the head is enough: id and title are top-level keys
            text = read_regular(str(f), 65536).decode("utf-8", errors="replace")
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
    runbook, errors, _ = _guarded(data, path, build)
    return runbook, errors


# id, (alert, when, index in triggers): positions are found when a claim is reported (rarely)
Claim = tuple[str, list[tuple[str, "str | None", int]]]
Summary = dict[str, Any]  # what `opsctl list` shows of a valid runbook


def check_for_validate(data: bytes, path: str) -> tuple[list[RunbookError], Claim | None,
                                                        Summary | None]:
    """``check_bytes`` for `opsctl validate` (and `list`, through its cache): the errors, the alerts
    the file's triggers claim (compared across the whole run), and, when it is valid, the runbook's
    summary (id, title, severity, triggers, options): plain data the cache keeps."""
    _, errors, doc = _guarded(data, path, False)
    if doc is None:
        return errors, None, None
    return errors, _claims(doc), None if errors else _summary(doc.data)


def _summary(d: dict[str, Any]) -> Summary:
    return {"id": d["id"], "title": d["title"], "severity": d["severity"],
            "triggers": [t if isinstance(t, str) else t["alert"] for t in d.get("triggers") or ()],
            "options": [o["name"] for o in d.get("options") or ()]}


def _claims(doc: Document) -> Claim | None:
    d = doc.data
    if not isinstance(d, dict) or not isinstance(d.get("id"), str) \
            or not isinstance(d.get("triggers"), list):
        return None
    out = []
    for i, t in enumerate(d["triggers"]):
        if isinstance(t, str):
            alert, when = t, None
        elif isinstance(t, dict) and isinstance(t.get("alert"), str):
            alert, when = t["alert"], t.get("when")
        else:
            continue
        out.append((alert, when if isinstance(when, str) else None, i))
    return d["id"], out


def _guarded(data: bytes, path: str, build: bool) -> tuple[Runbook | None, list[RunbookError],
                                                           Document | None]:
    from opsctl.errors import Location
    from opsctl.loader import one_line

    doc = None
    try:
        runbook, errors, doc = _check(data, path, build)
    except RecursionError:
        errors = [RunbookError("nested too deeply to check", Location(path, 1, 1))]
        runbook = None
    except MemoryError:
        errors = [RunbookError("too large to check (out of memory)", Location(path, 1, 1))]
        runbook = None
    except Exception as e:
        if caused_by_ctrl_c(e):  # not this file's fault: the user pressed Ctrl-C
            raise KeyboardInterrupt from e
        where = _save_traceback()
        errors = [RunbookError(f"internal error while checking this file: {type(e).__name__}: {e} "
                               f"({where}; please report it)", Location(path, 1, 1))]
        runbook = None
    for i, err in enumerate(errors):
        if one_line(err.message) != err.message:
            errors[i] = RunbookError(one_line(err.message), err.location)
    return runbook, errors, doc


def _check(data: bytes, path: str, build: bool) -> tuple[Runbook | None, list[RunbookError],
                                                         Document | None]:
    from opsctl import actions, loader, model, schema, semantic

    doc = loader.load_bytes(data, path)
    if doc.data is None:
        return None, _capped(doc.errors), None
    errors = list(doc.errors)
    errors += schema.validate_structure(doc, actions.load_all())
    sem_errors, deps = semantic.check(doc)
    seen = {(e.location.line, e.location.column, e.message) for e in errors}
    errors += [e for e in sem_errors
               if (e.location.line, e.location.column, e.message) not in seen]
    if errors:
        return None, _capped(errors), doc
    return (model.build(doc, deps, data) if build else None), [], doc


def _capped(errors: list[RunbookError]) -> list[RunbookError]:
    """Sorted by position; past MAX_FILE_ERRORS (where the loader, the schema and the semantic
    checks stop looking), one error says so."""
    errors = sorted(errors, key=lambda e: (e.location.line, e.location.column))
    if len(errors) > MAX_FILE_ERRORS:
        errors[MAX_FILE_ERRORS:] = [RunbookError(
            f"more errors from here on: the check of a file stops after {MAX_FILE_ERRORS} errors "
            "(fix these first)", errors[MAX_FILE_ERRORS].location)]
    return errors


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


def procedure(ref: str, render: Callable[[Runbook], str]) -> str:
    """What `opsctl show` prints of a runbook: ``render(runbook)`` of a runbook validated like
    ``load``.  An unchanged file's verdict, and its rendering once shown, come from `opsctl
    validate`'s content-hash cache (keyed by the bytes, opsctl's own sources and the libraries),
    so a second `show` imports neither the engine nor YAML."""
    from opsctl import validation

    path = str(resolve(ref))
    data = validation.read_bytes(path)  # without importing YAML
    if data is None:
        from opsctl.loader import read

        raise ValidationFailed(read(path)[1])
    rows, claim, summary = validation.entry(path, data)
    if rows or summary is None:
        raise ValidationFailed(validation.errors_of(path, rows))
    if isinstance(summary.get("procedure"), str):
        return str(summary["procedure"])
    from opsctl import loader, model

    doc = loader.load_bytes(data, path)
    if doc.data is None or doc.errors:  # cannot happen for bytes that validated
        raise ValidationFailed(doc.errors)
    # built for display: the steps carry no dependencies (only the executor needs them)
    text = render(model.build(doc, {}, data))
    validation.remember(path, data, (rows, claim, {**summary, "procedure": text}))
    return text


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
