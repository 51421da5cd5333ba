"""Pool usage and offending sessions (read-only)."""

from __future__ import annotations

from dataclasses import replace
from fnmatch import fnmatchcase
from typing import Any

from opsctl.actions import register
from opsctl.actions.base import type_schema
from opsctl.actions.needs import Pg
from opsctl.actions.postgres.common import DATABASE, PgAction, count
from opsctl.backends import postgres as pg
from opsctl.backends.postgres import SessionFilter, list_sessions


@register
class Connections(PgAction):
    """Connection usage against max_connections, broken down by state, database, user, application
    and client address (client backends only; opsctl's own sessions are reported apart, not counted).

    ```yaml
    - id: usage
      action: postgres.connections
      expect:
        - that: "result.usage_pct < 80"
          message: "pool at {{ result.usage_pct }}% of max_connections"
    ```
    """

    name = "postgres.connections"
    permissions = (Pg(roles=("pg_monitor",)),)
    summary = "Connection usage vs max_connections, by state / database / user / application / client"
    schema = type_schema({"database": DATABASE, "application_name": {
        "type": "string", "description": "glob; sessions it matches are counted as `matching`"},
        "settle_seconds": {"type": "number", "minimum": 0, "maximum": 60, "default": 0,
                           "description": "verify: look only this long after the step starts (an "
                           "application that reconnects its leaked pool right after the fix is seen)"}})

    def run(self) -> dict[str, Any]:
        if self.args.get("settle_seconds"):
            self.ctx.sleep(float(self.args["settle_seconds"]))
        with self.session() as conn:
            limits = pg.fetch(conn, "SELECT current_setting('max_connections')::int AS max, "
                                    "current_setting('superuser_reserved_connections')::int AS reserved")[0]
            # another role's sessions hide even their backend_type from a role without
            # pg_read_all_stats: counted all the same (they hold slots), their state unknown
            everyone = pg.fetch(conn, "SELECT coalesce(state, CASE WHEN backend_type IS NULL "
                                      "THEN 'unknown (needs pg_read_all_stats)' END) AS state, datname, "
                                      "usename, application_name, host(client_addr) AS client "
                                      "FROM pg_stat_activity WHERE backend_type = 'client backend' "
                                      "OR (backend_type IS NULL AND usesysid IS NOT NULL "
                                      "AND datname IS NOT NULL)")
        # opsctl's own sessions are not the incident: counting them would make verify flap
        rows = [r for r in everyone if r["application_name"] != pg.APPLICATION_NAME]
        total = len(rows)
        states = count(rows, "state")
        pattern = self.args.get("application_name")
        return {
            "max_connections": limits["max"], "reserved": limits["reserved"], "total": total,
            "usage_pct": round(100.0 * total / limits["max"], 1),
            "available": max(0, limits["max"] - limits["reserved"] - total),
            "active": states.get("active", 0), "idle": states.get("idle", 0),
            "idle_in_transaction": states.get("idle in transaction", 0)
            + states.get("idle in transaction (aborted)", 0),
            "by_state": states, "hidden": states.get("unknown (needs pg_read_all_stats)", 0),
            "by_database": _ranked(rows, "datname"), "by_user": _ranked(rows, "usename"),
            "by_application": _by_application(rows), "by_client": _ranked(rows, "client"),
            "opsctl_sessions": len(everyone) - total,
            "matching": sum(1 for r in rows if pattern and fnmatchcase(r["application_name"] or "", pattern)),
        }

    @classmethod
    def summarize(cls, result: Any) -> str:
        top = ", ".join(f"{a['application_name'] or '?'}={a['total']}" for a in result["by_application"][:3])
        return (f"{result['total']}/{result['max_connections']} connections ({result['usage_pct']}%), "
                f"{result['idle_in_transaction']} idle in transaction; top: {top or 'none'}")




def _ranked(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    counts = count(rows, key)
    return [{"name": k, "count": v} for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def _by_application(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    apps: dict[str, dict[str, Any]] = {}
    for r in rows:
        name = r["application_name"] or ""
        a = apps.setdefault(name, {"application_name": name, "total": 0, "active": 0, "idle": 0,
                                   "idle_in_transaction": 0})
        a["total"] += 1
        state = (r["state"] or "").replace(" (aborted)", "").replace(" ", "_")
        if state in a:
            a[state] += 1
    return sorted(apps.values(), key=lambda a: (-a["total"], a["application_name"]))


@register
class Sessions(PgAction):
    """Sessions idle in transaction or running a query for longer than the thresholds.

    `offending` lists the sessions opsctl may act on; `protected` lists offenders it will not touch
    (superusers, replication backends, opsctl itself) unless a mitigation asks for them.

    ```yaml
    - id: sessions
      action: postgres.sessions
      with: {database: app, idle_in_transaction_seconds: 60, long_query_seconds: 300}
      expect:
        - that: "result.offending_count == 0"
          message: "{{ result.offending_count }} sessions over the thresholds"
    ```
    """

    name = "postgres.sessions"
    permissions = (Pg(roles=("pg_monitor",)),)
    summary = "Long-running queries and idle-in-transaction sessions over thresholds"
    schema = type_schema({
        "database": DATABASE,
        "application_name": {"type": "string", "description": "glob on application_name"},
        "user": {"type": "string"},
        "idle_in_transaction_seconds": {"type": "number", "minimum": 0, "default": 60},
        "long_query_seconds": {"type": "number", "minimum": 0, "default": 300},
        "settle_seconds": {"type": "number", "minimum": 0, "maximum": 60, "default": 0,
                           "description": "verify: when nothing is offending, look again this much "
                           "later and report that look (a leak that comes back at once is seen)"},
    })

    def run(self) -> dict[str, Any]:
        first = self._look()
        settle = float(self.args.get("settle_seconds", 0))
        if settle and not first["offending_count"]:
            self.ctx.sleep(settle)
            return {**self._look(), "settled_seconds": settle}
        return first

    def _look(self) -> dict[str, Any]:
        flt = SessionFilter.from_args({"idle_in_transaction_seconds": 60, "long_query_seconds": 300,
                                       **self.args})
        with self.session() as conn:
            everything = list_sessions(conn)
            if not flt.database:  # the database opsctl is connected to: the runbooks' default scope
                flt = replace(flt, database=pg.current_database(conn))
            pg.require_visible(conn, everything, flt)
        loose = replace(flt, include_superusers=True, include_replication=True, include_opsctl=True)
        over = [s for s in everything if loose.matches(s)]
        offending = [s for s in over if flt.matches(s)]
        protected = [s for s in over if not flt.matches(s)]
        idle_tx = [s for s in offending if s["state"].startswith("idle in transaction")]
        long_q = [s for s in offending if s["state"] == "active"]
        return {"offending": offending, "offending_count": len(offending),
                "idle_in_transaction": idle_tx, "idle_in_transaction_count": len(idle_tx),
                "long_running": long_q, "long_running_count": len(long_q),
                "protected": protected, "protected_count": len(protected),
                "oldest_seconds": max((s["duration_seconds"] for s in offending), default=0),
                "pids": [s["pid"] for s in offending],
                "excluded_by_scope": pg.excluded_by_scope(everything, flt)}

    @classmethod
    def summarize(cls, result: Any) -> str:
        return (f"{result['offending_count']} offending sessions ({result['idle_in_transaction_count']} idle "
                f"in transaction, {result['long_running_count']} long-running; oldest "
                f"{result['oldest_seconds']:.0f}s); {result['protected_count']} protected")
