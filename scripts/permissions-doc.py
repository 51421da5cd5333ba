"""Write docs/permissions.md: the permissions table of every shipped runbook, generated from the
permissions each action declares (tests/engine/test_permissions.py fails when it is stale).

    .venv/bin/python scripts/permissions-doc.py
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "permissions.md"


def generate() -> str:
    from opsctl import catalog
    from opsctl.export.permissions_view import markdown

    files = sorted(f for f in (REPO / "runbooks").glob("rb-*.yaml")
                   if not f.name.endswith(catalog.NOT_RUNBOOKS))  # rb-006.rehearsal.yaml: not a runbook
    return markdown([catalog.load(str(f)) for f in files])


if __name__ == "__main__":
    DOC.write_text(generate())
    sys.stdout.write(f"wrote {DOC.relative_to(REPO)}\n")
