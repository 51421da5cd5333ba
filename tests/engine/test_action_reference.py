"""docs/actions.md is generated from the registry (`opsctl actions --markdown`) and must be current;
`opsctl actions` keeps action names whole at 80 columns, `opsctl actions NAME` shows one in full."""

from __future__ import annotations

from collections.abc import Callable

from opsctl.actions import load_all
from opsctl.reference import describe, markdown
from tests.fixtures.core import REPO, Result


def test_checked_in_reference_is_current() -> None:
    page = (REPO / "docs" / "actions.md").read_text()
    assert page == markdown(load_all()), \
        "docs/actions.md is stale: regenerate it with `opsctl actions --markdown > docs/actions.md`"


def test_reference_names_every_action_with_kind_arguments_and_example() -> None:
    registry = load_all()
    page = markdown(registry)
    for name, cls in registry.items():
        assert f"### `{name}`" in page
        one = describe(cls)
        assert [a["name"] for a in one["arguments"]] == list(cls.schema.get("properties", {}))
    terminate = describe(registry["postgres.terminate"])
    assert terminate["read_only"] is False and "action: postgres.terminate" in terminate["example"]
    assert next(a for a in terminate["arguments"] if a["name"] == "max_targets")["default"] == 20


def test_actions_list_keeps_names_whole_at_80_columns(opsctl: Callable[..., Result]) -> None:
    listed = opsctl("actions", env={"COLUMNS": "80"})
    assert listed.code == 0
    assert all(len(line) <= 80 for line in listed.stdout.splitlines())
    for name in load_all():
        assert f" {name} " in listed.stdout, name


def test_actions_name_shows_one_action_in_full(opsctl: Callable[..., Result]) -> None:
    one = opsctl("actions", "postgres.terminate", env={"COLUMNS": "80"})
    assert one.code == 0, one.output
    out = one.stdout
    assert "postgres.terminate: postgres, mutating" in out
    assert "max_targets" in out and "idle_in_transaction_seconds" in out and "example" in out
    assert "action: postgres.terminate" in out
    unknown = opsctl("actions", "postgres.terminat")
    assert unknown.code == 2 and "did you mean 'postgres.terminate'" in unknown.stderr
