"""`opsctl validate` over many files: every error of every file, files spread over the cores, and a
content-hash cache for warm runs.

Every file is read and parsed once: its check yields its errors and the alerts its triggers claim,
which are compared across files at the end (two runbooks claiming one alert without a ``when`` that
separates them: ``alerts.bindings.claim_errors``).

The cache (like ruff's) maps sha256(path, bytes) to that file's errors and claims.  It lives in one file per
*fingerprint*: the hash of opsctl's own source files (the action registry and every argument
schema are defined there: ``actions.ACTION_MODULES``), of the Python version and of the installed
files of the libraries that decide what is valid (PyYAML, Jinja2, jsonschema, jsonschema-rs).
Upgrading opsctl or a library, or changing an action, changes the fingerprint, so an old verdict
is never reused.  Computing it imports nothing: a warm run does not load the engine.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsctl.errors import Location, RunbookError
from opsctl.fsread import read_regular

if TYPE_CHECKING:
    from opsctl.catalog import Claim, Summary
    from opsctl.sourcemap import SourceMap

_CACHE_VERSION = 4  # 4: claims without positions
_MAX_ENTRIES = 20_000
_READ_LIMIT = 256 * 1024 + 1  # loader.MAX_FILE_BYTES + 1, as loader.read reads (a test keeps them equal)
_PARALLEL_MIN_FILES = 64  # below this, starting workers costs more than it saves
ErrorRow = tuple[int, int, str, str]  # line, column, path, message
Entry = tuple[list[ErrorRow], "Claim | None", "Summary | None"]  # what the cache keeps of a file


def cache_dir() -> Path:
    if os.environ.get("OPSCTL_CACHE_DIR"):
        return Path(os.environ["OPSCTL_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "opsctl"


def fingerprint() -> str:
    """Changes whenever what `opsctl validate` accepts could change."""
    from importlib.util import find_spec

    import opsctl

    h = hashlib.sha256(f"v{_CACHE_VERSION} {opsctl.__version__} {sys.version}".encode())
    root = Path(opsctl.__file__).parent
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    for f in sorted(root.glob("_*.so")):  # the loader's C part (_yamlfast), when built
        st = f.stat()
        h.update(f"{f.name} {st.st_mtime_ns} {st.st_size}".encode())
    for lib in ("yaml", "jinja2", "jsonschema", "jsonschema_rs"):
        try:  # by their installed files (an upgrade rewrites them); find_spec imports nothing here
            spec = find_spec(lib)
            where = list(spec.submodule_search_locations or []) if spec else []
            for d in where:
                for e in sorted(os.scandir(d), key=lambda e: e.name):
                    if e.is_file():
                        st = e.stat()
                        h.update(f"{lib} {e.path} {st.st_mtime_ns} {st.st_size}".encode())
            if not where:
                h.update(f"{lib} {spec.origin if spec else 'missing'}".encode())
        except (ImportError, OSError, ValueError):
            h.update(f"{lib} missing".encode())
    return h.hexdigest()[:24]


def _key(path: str, data: bytes) -> str:
    return hashlib.sha256(path.encode("utf-8", "surrogateescape") + b"\0" + data).hexdigest()[:32]


def _rows(errors: list[RunbookError]) -> list[ErrorRow]:
    return [(e.location.line, e.location.column, e.location.path, e.message) for e in errors]


def _errors(path: str, rows: list[ErrorRow]) -> list[RunbookError]:
    return [RunbookError(msg, Location(path, line, col, p)) for line, col, p, msg in rows]


def _check_paths(paths: list[str]) -> list[tuple[str | None, Entry]]:
    """(cache key or None when unreadable, (error rows, claims)) of each file, in order."""
    from opsctl import catalog, loader

    out: list[tuple[str | None, Entry]] = []
    for path in paths:
        data, errors = loader.read(path)
        if data is None:
            out.append((None, (_rows(errors), None, None)))
            continue
        errors, claim, summary = catalog.check_for_validate(data, path)
        out.append((_key(path, data), (_rows(errors), claim, summary)))
    return out


def _warm_up() -> None:
    """Load what every file needs once, before forking, so workers start ready."""
    from opsctl import actions, schema, templating

    registry = actions.load_all()
    schema._fast_base()
    for cls in registry.values():
        schema._fast_args(cls)
    templating.environment()


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """Checking a file makes many short-lived objects without cycles (YAML nodes, marks, data),
    which reference counting frees; the cyclic collector, run every 700 allocations, would scan the
    long-lived engine (Jinja, the registry, schemas) again and again: a third of the CPU time."""
    old = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


def _run(paths: list[str], jobs: int) -> list[tuple[str | None, Entry]]:
    if jobs <= 1 or len(paths) < _PARALLEL_MIN_FILES or "fork" not in _start_methods():
        return _check_paths(paths)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    n_chunks = min(len(paths), jobs * 4)
    size = -(-len(paths) // n_chunks)
    chunks = [paths[i:i + size] for i in range(0, len(paths), size)]
    results: list[list[tuple[str | None, Entry]] | None] = [None] * len(chunks)
    try:
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
            futures = [pool.submit(_check_paths, chunk) for chunk in chunks]
            for i, fut in enumerate(futures):
                try:
                    results[i] = fut.result()
                except BrokenProcessPool:
                    break
    except (OSError, BrokenProcessPool):  # cannot fork here: do it in this process
        pass
    out: list[tuple[str | None, Entry]] = []
    for chunk, got in zip(chunks, results, strict=True):
        out += got if got is not None else _check_paths(chunk)
    return out


def _start_methods() -> list[str]:
    import multiprocessing

    return multiprocessing.get_all_start_methods()


def default_jobs() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def validate_files(files: list[str], *, jobs: int = 0, use_cache: bool = True) -> list[RunbookError]:
    """Every error of every file, in file order, each file's sorted by position; then the alerts
    claimed by two valid runbooks."""
    errors: list[RunbookError] = []
    claims: list[_Claims] = []
    for path, (rows, claim, _) in entries(files, jobs=jobs, use_cache=use_cache).items():
        errors += _errors(path, rows)
        if not rows and claim is not None:
            claims.append(_Claims(path, claim))
    alerts = [a for c in claims for a in {b["alert"] for b in c.bindings}]
    if len(alerts) != len(set(alerts)):  # an alert claimed by two runbooks (else nothing to import)
        from opsctl.alerts.bindings import claim_errors

        errors += claim_errors(claims)
    return errors


def entries(files: list[str], *, jobs: int = 0, use_cache: bool = True) -> dict[str, Entry]:
    """Each file's errors (as rows), claims and summary: from the cache for an unchanged file (a
    warm run imports neither YAML nor the engine), else checked, over the cores, and remembered."""
    jobs = jobs or default_jobs()
    cache: dict[str, Entry] = {}
    cache_file: Path | None = None
    keys: dict[str, str] = {}
    if use_cache:
        cache_file = cache_dir() / f"validate-{fingerprint()}.json"
        cache = _load_cache(cache_file)
        for path in files:
            data = read_bytes(path)
            if data is not None:
                keys[path] = _key(path, data)
    todo = [f for f in files if keys.get(f) not in cache]
    fresh: dict[str, tuple[str | None, Entry]] = {}
    if todo:
        _warm_up()
        with _fewer_collections():
            fresh = dict(zip(todo, _run(todo, jobs), strict=True))
    out: dict[str, Entry] = {}
    new: dict[str, Entry] = {}
    for path in files:
        if path in fresh:
            key, entry = fresh[path]
            # a file that changed between hashing and checking is not cached (key mismatch)
            if key is not None and key == keys.get(path):
                new[key] = entry
        else:
            entry = cache[keys[path]]
        out[path] = entry
    if cache_file is not None and new:
        _save_cache(cache_file, {**cache, **new})
    return out


def entry(path: str, data: bytes) -> Entry:
    """The entry of one file's bytes (cached, or checked and remembered): `opsctl show`."""
    cache_file = cache_dir() / f"validate-{fingerprint()}.json"
    cache = _load_cache(cache_file)
    key = _key(path, data)
    got = cache.get(key)
    if got is None:
        from opsctl import catalog

        errors, claim, summary = catalog.check_for_validate(data, path)
        got = (_rows(errors), claim, summary)
        _save_cache(cache_file, {**cache, key: got})
    return got


def remember(path: str, data: bytes, new: Entry) -> None:
    """Replace the entry of one file's bytes (`opsctl show` adds the procedure it rendered)."""
    cache_file = cache_dir() / f"validate-{fingerprint()}.json"
    _save_cache(cache_file, {**_load_cache(cache_file), _key(path, data): new})


def errors_of(path: str, rows: list[ErrorRow]) -> list[RunbookError]:
    return _errors(path, rows)


def read_bytes(path: str) -> bytes | None:
    """The bytes ``loader.read`` gives, without importing YAML (what a warm run hashes)."""
    try:
        return read_regular(path, _READ_LIMIT)  # a FIFO named x.yaml must not block the warm run
    except OSError:
        return None


class _Claims:
    """What ``alerts.bindings.claim_errors`` reads of a runbook: id, bindings, and their positions,
    found by reading the file again when a claim is reported (valid files need none)."""

    def __init__(self, path: str, claim: Claim) -> None:
        self.id, self.path, self.source = claim[0], path, self
        self.bindings = tuple({"alert": a, "when": w, "index": i} for a, w, i in claim[1])

    def locate(self, path: tuple[Any, ...]) -> Location:
        return self._positions.locate(path)

    @cached_property
    def _positions(self) -> SourceMap:
        from opsctl import loader

        return loader.load_file(self.path).source


def _load_cache(path: Path) -> dict[str, Entry]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        entries = doc["entries"] if doc.get("version") == _CACHE_VERSION else {}
        return {k: ([tuple(r) for r in rows],  # type: ignore[misc]
                    None if claim is None else (claim[0], [tuple(b) for b in claim[1]]),
                    summary if isinstance(summary, dict) else None)
                for k, (rows, claim, summary) in entries.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError):
        return {}  # no cache, or an unreadable one: check everything


def _save_cache(path: Path, entries: dict[str, Entry]) -> None:
    if len(entries) > _MAX_ENTRIES:
        entries = dict(list(entries.items())[-_MAX_ENTRIES:])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for old in path.parent.glob("validate-*.json"):  # verdicts of another opsctl: stale
            if old != path:
                old.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".validate-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"version": _CACHE_VERSION, "entries": entries}, fh)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home: validate still works, just without a warm cache
