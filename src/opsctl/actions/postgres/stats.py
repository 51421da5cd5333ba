"""Top statements, database sizes, replication (read-only)."""

from __future__ import annotations

from typing import Any

from opsctl.actions import register
from opsctl.actions.base import type_schema
from opsctl.actions.needs import Pg
from opsctl.actions.postgres.common import DATABASE, PgAction
from opsctl.backends import postgres as pg


@register
class TopStatements(PgAction):
    """Slowest statements by mean time from pg_stat_statements; when the extension is missing the
    result says so (`available: false`, `reason`) instead of failing.

    ```yaml
    - id: top
      action: postgres.top_statements
      with: {limit: 10, slow_ms: 100}
      expect:
        - that: "result.available"
          severity: warning
          message: "{{ result.reason }}"
    ```
    """

    name = "postgres.top_statements"
    permissions = (Pg(roles=("pg_monitor",)),)
    summary = "Top statements by mean execution time (pg_stat_statements, if installed)"
    schema = type_schema({"database": DATABASE,
                          "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
                          "min_calls": {"type": "integer", "minimum": 1, "default": 1},
                          "slow_ms": {"type": "number", "minimum": 0, "default": 100}})

    _SQL = ("SELECT s.queryid::text AS queryid,"
            " left(regexp_replace(s.query, '\\s+', ' ', 'g'), 200) AS query,"
            " s.calls, round(s.mean_exec_time::numeric, 2)::float AS mean_ms,"
            " round(s.max_exec_time::numeric, 2)::float AS max_ms,"
            " round(s.total_exec_time::numeric, 2)::float AS total_ms, s.rows, d.datname AS database"
            " FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid"
            " WHERE s.calls >= %(min_calls)s AND (%(db)s::text IS NULL OR d.datname = %(db)s)"
            " AND s.query NOT ILIKE '%%pg_stat_statements%%'"
            " ORDER BY s.mean_exec_time DESC LIMIT %(limit)s")

    def run(self) -> dict[str, Any]:
        slow_ms = float(self.args.get("slow_ms", 100))
        with self.session() as conn:
            installed = pg.fetch(conn, "SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'")
            # optional: not needed for the decision, so a missing privilege or a library that is
            # not preloaded is a warning, never the end of the run (shared_preload_libraries itself
            # is not read: that needs pg_read_all_settings, and the query says it anyway)
            rows, why = (None, "the pg_stat_statements extension is not installed in this database "
                               "(CREATE EXTENSION pg_stat_statements)") if not installed else \
                pg.optional_fetch(conn, self._SQL, {"min_calls": self.args.get("min_calls", 1),
                                                    "db": self.args.get("database") or None,
                                                    "limit": self.args.get("limit", 10)})
        if rows is None:
            return {"available": False, "reason": f"no statement statistics: {why}; use "
                    "postgres.sessions / postgres.locks and the slow-query log instead",
                    "statements": [], "slow_count": 0, "slowest_mean_ms": 0}
        hidden = sum(1 for r in rows if r["query"] == pg.HIDDEN)
        for r in rows:
            r["query"] = pg.redact_sql(r["query"])
        note = (f"{hidden} statement text(s) of other roles hidden: needs pg_read_all_stats"
                if hidden else "")
        return {"available": True, "reason": note, "hidden_texts": hidden, "statements": rows,
                "slow_count": sum(1 for r in rows if r["mean_ms"] > slow_ms),
                "slowest_mean_ms": rows[0]["mean_ms"] if rows else 0}

    @classmethod
    def summarize(cls, result: Any) -> str:
        if not result["available"]:
            return result["reason"]
        return (f"{len(result['statements'])} statements, {result['slow_count']} slow; slowest mean "
                f"{result['slowest_mean_ms']} ms")


@register
class DatabaseSize(PgAction):
    """Size of each database (or of one).

    ```yaml
    - id: size
      action: postgres.database_size
      with: {database: app}
    ```
    """

    name = "postgres.database_size"
    permissions = (Pg(roles=("pg_monitor",)),)
    summary = "Database sizes in bytes"
    schema = type_schema({"database": DATABASE})

    def run(self) -> dict[str, Any]:
        db = self.args.get("database") or None
        with self.session() as conn:
            rows = pg.fetch(conn, "SELECT datname AS name, pg_database_size(datname) AS bytes, "
                                  "pg_size_pretty(pg_database_size(datname)) AS size FROM pg_database "
                                  "WHERE datallowconn AND (%(db)s::text IS NULL OR datname = %(db)s) "
                                  "ORDER BY 2 DESC", {"db": db})
        return {"databases": rows, "total_bytes": sum(r["bytes"] for r in rows),
                "bytes": rows[0]["bytes"] if db and rows else None}

    @classmethod
    def summarize(cls, result: Any) -> str:
        return ", ".join(f"{r['name']}={r['size']}" for r in result["databases"][:5]) or "no database"


@register
class Replication(PgAction):
    """Replication status: role, replicas with lag (on a primary), replay delay (on a replica),
    inactive replication slots.

    ```yaml
    - id: replication
      action: postgres.replication
      expect:
        - that: "result.max_lag_seconds < 30"
          severity: warning
          message: "replica lag {{ result.max_lag_seconds }}s"
    ```
    """

    name = "postgres.replication"
    permissions = (Pg(roles=("pg_monitor",)),)
    summary = "Primary/replica role, replica lag, inactive slots"
    schema = type_schema({"database": DATABASE})

    def run(self) -> dict[str, Any]:
        with self.session() as conn:
            replica = pg.fetch(conn, "SELECT pg_is_in_recovery() AS r")[0]["r"]
            replicas = [] if replica else pg.fetch(
                conn, "SELECT application_name, host(client_addr) AS client_addr, state, sync_state, "
                      "coalesce(extract(epoch FROM replay_lag), 0)::float AS lag_seconds, "
                      "coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::bigint AS lag_bytes "
                      "FROM pg_stat_replication")
            delay = 0.0
            if replica:
                delay = pg.fetch(conn, "SELECT coalesce(extract(epoch FROM now() - "
                                       "pg_last_xact_replay_timestamp()), 0)::float AS d")[0]["d"]
            slots = pg.fetch(conn, "SELECT slot_name, slot_type, active FROM pg_replication_slots")
        lags = [r["lag_seconds"] for r in replicas] + ([delay] if replica else [])
        return {"role": "replica" if replica else "primary", "replicas": replicas,
                "replica_count": len(replicas), "max_lag_seconds": round(max(lags, default=0.0), 1),
                "max_lag_bytes": max((r["lag_bytes"] for r in replicas), default=0),
                "inactive_slots": [s["slot_name"] for s in slots if not s["active"]]}
