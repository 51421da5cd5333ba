"""Shared by the read-only guard tests: the registry's actions per backend, test actions registered
for one test, and the real engine run in this process (so that a test action is in its registry)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from opsctl import actions
from opsctl.actions.base import Action, ActionContext


def registered(backend: str, *, read_only: bool) -> list[str]:
    """Names of the registered actions of a backend that are read-only (or mutating)."""
    return sorted(n for n, c in actions.load_all().items()
                  if c.backend == backend and c.read_only == read_only)


def assert_covers(table: dict[str, Any], backend: str, *, read_only: bool) -> None:
    """A new action of the backend must be added to the meta-test's table (it then runs under the
    guard); an entry for an action that no longer exists is stale."""
    assert sorted(table) == registered(backend, read_only=read_only)


def guarded(ctx_env: Any = None, **kw: Any) -> ActionContext:
    """A context as the engine makes it for read-only code (read-only step, plan(), dry-run)."""
    return ActionContext(environment=ctx_env, read_only=True, **kw)


@contextmanager
def extra_actions(*classes: type[Action]) -> Iterator[None]:
    """Register actions for one test only (the registry is the process's)."""
    actions.load_all()
    for cls in classes:
        actions.register(cls)
    try:
        yield
    finally:
        for cls in classes:
            actions._REGISTRY.pop(cls.name, None)


def run_engine(runbook: Path, monkeypatch: pytest.MonkeyPatch, state: Path, *, dry_run: bool = False,
               yes: bool = False, params: dict[str, str] | None = None) -> Any:
    """What `opsctl run RUNBOOK [--dry-run] [--yes] -o json` does, in this process: the real catalog,
    executor, step runner and run log; returns the Outcome (records with status and reason)."""
    from opsctl import audit, catalog, config
    from opsctl.executor import Executor, RunSettings
    from opsctl.render import JsonRenderer

    monkeypatch.setenv("OPSCTL_STATE_DIR", str(state))
    rb = catalog.load(str(runbook))
    resolved = rb.resolve_params(params or {})
    environment = config.load_environment(None)
    settings = RunSettings(dry_run=dry_run, yes=yes, interactive=False)
    log = audit.RunLog(audit.new_run_id(rb.id))
    renderer = JsonRenderer()
    log.start(rb, resolved, environment.name, settings, [])
    renderer.secrets = log.secrets
    renderer.start(rb, environment, log.run_id, dry_run, audit.redact(rb.redacted(resolved)))
    outcome = Executor(rb, resolved, environment, settings, renderer, log, None).execute()
    log.end(outcome)
    return outcome


def record(outcome: Any, step: str) -> Any:
    return next(r for r in outcome.records if r.id == step)
