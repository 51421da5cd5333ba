"""The committed runbook.schema.json (what the runbooks' yaml-language-server modeline points at)
must be what `opsctl schema` generates from the action registry today."""

from __future__ import annotations

import json
from pathlib import Path

from opsctl.actions import load_all
from opsctl.schema import runbook_schema
from tests.fixtures.core import RUNBOOK_FILES

REPO = Path(__file__).resolve().parents[2]


def test_committed_schema_matches_the_registry() -> None:
    committed = json.loads((REPO / "runbook.schema.json").read_text())
    assert committed == runbook_schema(load_all(), editor=True), \
        "runbook.schema.json is stale: regenerate it with `opsctl schema > runbook.schema.json`"


def test_every_shipped_runbook_points_its_editor_at_the_schema() -> None:
    for path in RUNBOOK_FILES:
        first = path.read_text().splitlines()[0]
        assert first == "# yaml-language-server: $schema=../runbook.schema.json", path.name
