"""What every PostgreSQL action shares: the session factory, the database argument, row helpers."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from opsctl.actions.base import Action
from opsctl.backends import postgres as pg

DATABASE = {"type": "string", "description": "database to connect to (and to filter on, where it applies)"}


class PgAction(Action):
    backend = "postgres"

    def session(self, interruptible: bool = True) -> Any:
        """The run's connection; `interruptible=False` for a short look-up that must still run
        after a Ctrl-C (what a stopped mutation had done)."""
        database = self.args.get("database") or None
        client = self.ctx.client(f"postgres:{database or ''}", lambda: pg.PgClient(
            pg.settings_from(self.ctx.backend_config("postgres"), database)))
        remaining = self.ctx.remaining()
        if not interruptible:
            return client.session(max(remaining or 0.0, 2.0), read_only=self.ctx.read_only)
        return client.session(remaining, cancelled=self.ctx.cancelled, read_only=self.ctx.read_only)


def count(rows: list[dict[str, Any]], key: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r[key] or ""] = out.get(r[key] or "", 0) + 1
    return out


def jsonable(v: Any) -> Any:
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, datetime | date):
        return v.isoformat()
    if isinstance(v, timedelta):
        return v.total_seconds()
    if isinstance(v, list | tuple):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, bytes | memoryview):
        return bytes(v).hex()
    return str(v)
