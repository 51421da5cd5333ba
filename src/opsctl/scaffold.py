"""`opsctl new`: a runbook that validates, and its rehearsal file, written under ./runbooks.

From a template per backend (``opsctl/templates/<backend>.yaml``: every step feature shown, the
less common ones as comments) or from an existing runbook (``--from rb-006``: its text with the
new id, and its rehearsal file when it has one).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from opsctl.errors import UsageError

BACKENDS = ("postgres", "redis", "kafka", "aws")
SLUG = re.compile(r"^[a-z0-9]+([_-][a-z0-9]+)*$")
MODELINE = "# yaml-language-server: $schema=../runbook.schema.json"
_ID = re.compile(r"(?m)^id:.*$")


def template(name: str) -> str:
    return resources.files("opsctl").joinpath("templates", name).read_text(encoding="utf-8")


def new(name: str, *, source: str | None = None, backend: str | None = None,
        directory: Path = Path("runbooks"), force: bool = False) -> list[Path]:
    """Write DIRECTORY/NAME.yaml and DIRECTORY/NAME.rehearsal.yaml (and ./runbook.schema.json for
    the editor when there is none); returns the files written."""
    if not SLUG.match(name) or len(name) > 64:
        raise UsageError(f"runbook id {name!r}: use a slug of lowercase letters, digits and dashes "
                         "(pg-pool-exhausted; the shipped catalogue uses rb-NNN)")
    if (source is None) == (backend is None):
        raise UsageError("give one of --from RUNBOOK (copy an existing runbook) or --backend "
                         f"{'|'.join(BACKENDS)} (start from an example)")
    if backend is not None and backend not in BACKENDS:
        raise UsageError(f"--backend {backend!r}: one of {', '.join(BACKENDS)}")
    runbook, rehearsal = directory / f"{name}.yaml", directory / f"{name}.rehearsal.yaml"
    for path in (runbook, rehearsal):
        if path.exists() and not force:
            raise UsageError(f"{path} exists; --force overwrites it")
    if backend is not None:
        title = name.replace("-", " ").replace("_", " ").capitalize()
        subst = {"__ID__": name, "__TITLE__": title, "__FILE__": runbook.name}
        text, practice = template(f"{backend}.yaml"), template(f"{backend}.rehearsal.yaml")
        for k, v in subst.items():
            text, practice = text.replace(k, v), practice.replace(k, v)
    else:
        text, practice = _copy(str(source), name)
    directory.mkdir(parents=True, exist_ok=True)
    written = [runbook, rehearsal]
    runbook.write_text(text, encoding="utf-8")
    rehearsal.write_text(practice, encoding="utf-8")
    schema_file = directory.parent / "runbook.schema.json"
    if not schema_file.exists():  # what the modeline points the editor at, for this opsctl
        import json

        from opsctl.actions import load_all
        from opsctl.schema import runbook_schema

        schema_file.write_text(json.dumps(runbook_schema(load_all(), editor=True), indent=2) + "\n")
        written.append(schema_file)
    return written


def _copy(source: str, name: str) -> tuple[str, str]:
    from opsctl.catalog import resolve
    from opsctl.testing.rehearse import SUFFIXES

    src = resolve(source)
    text = src.read_text(encoding="utf-8")
    old_id = (_ID.search(text) or re.search("$", text))
    text = _ID.sub(f"id: {name}", text, count=1)
    lines = text.splitlines(keepends=True)
    if lines and lines[0].startswith("# yaml-language-server:"):
        lines[0] = MODELINE + "\n"
    else:
        lines.insert(0, MODELINE + "\n")
    text = "".join(lines)
    stem = src.name.rsplit(".", 1)[0]
    ids = {stem, (old_id.group(0).split(":", 1)[-1].strip() if old_id else stem)}
    for candidate in (src.parent / f"{s}{suffix}" for s in ids for suffix in SUFFIXES):
        if candidate.is_file():
            practice = candidate.read_text(encoding="utf-8")
            return text, practice.replace("runbook:", "# runbook:")
    return text, _blank_rehearsal(name)


def _blank_rehearsal(name: str) -> str:
    return f"""# Rehearsal of {name}: `opsctl rehearse runbooks/` (docs/rehearsals.md). Name the servers
# the runbook needs, inject the fault it handles, and say what must hold afterwards.
servers: [postgres]
rehearsals:
  - name: a dry-run diagnoses and changes nothing
    faults:
      - postgres.leak_connections: {{count: 3, application_name: checkout-api}}
    dry_run: true
    expect:
      exit_code: 0
      state:
        - postgres.sessions: {{application_name: checkout-api, equals: 3}}
"""
