"""PostgreSQL actions: pool usage, sessions, lock chains, statements, sizes, replication (read-only);
cancel / terminate backends and per-role settings (mutating, with live plans).

Targeting rules shared by every mutating action: opsctl's own sessions (application_name ``opsctl``),
superusers and non-client backends (walsenders, autovacuum...) are never selected unless the step
asks for them explicitly, and ``max_targets`` bounds how many backends a step may touch.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from fnmatch import fnmatchcase
from typing import Any

from opsctl.actions import register
from opsctl.actions.base import Action, Change, Plan, is_template, type_schema
from opsctl.backends import postgres as pg
from opsctl.backends.postgres import SELECTION_SCHEMA, SessionFilter, list_sessions
from opsctl.errors import ActionError

DATABASE = {"type": "string", "description": "database to connect to (and to filter on, where it applies)"}


class PgAction(Action):
    backend = "postgres"

    def session(self) -> Any:
        database = self.args.get("database") or None
        client = self.ctx.client(f"postgres:{database or ''}", lambda: pg.PgClient(
            pg.settings_from(self.ctx.backend_config("postgres"), database)))
        return client.session(self.ctx.remaining(), cancelled=self.ctx.cancelled)


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
    summary = "Connection usage vs max_connections, by state / database / user / application / client"
    schema = type_schema({"database": DATABASE, "application_name": {
        "type": "string", "description": "glob; sessions it matches are counted as `matching`"}})

    def run(self) -> dict[str, Any]:
        with self.session() as conn:
            limits = pg.fetch(conn, "SELECT current_setting('max_connections')::int AS max, "
                                    "current_setting('superuser_reserved_connections')::int AS reserved")[0]
            everyone = pg.fetch(conn, "SELECT state, datname, usename, application_name, "
                                      "host(client_addr) AS client FROM pg_stat_activity "
                                      "WHERE backend_type = 'client backend'")
        # opsctl's own sessions are not the incident: counting them would make verify flap
        rows = [r for r in everyone if r["application_name"] != pg.APPLICATION_NAME]
        total = len(rows)
        states = _count(rows, "state")
        pattern = self.args.get("application_name")
        return {
            "max_connections": limits["max"], "reserved": limits["reserved"], "total": total,
            "usage_pct": round(100.0 * total / limits["max"], 1),
            "available": max(0, limits["max"] - limits["reserved"] - total),
            "active": states.get("active", 0), "idle": states.get("idle", 0),
            "idle_in_transaction": states.get("idle in transaction", 0)
            + states.get("idle in transaction (aborted)", 0),
            "by_state": states,
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


def _count(rows: list[dict[str, Any]], key: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r[key] or ""] = out.get(r[key] or "", 0) + 1
    return out


def _ranked(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    counts = _count(rows, key)
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
    summary = "Long-running queries and idle-in-transaction sessions over thresholds"
    schema = type_schema({
        "database": DATABASE,
        "application_name": {"type": "string", "description": "glob on application_name"},
        "user": {"type": "string"},
        "idle_in_transaction_seconds": {"type": "number", "minimum": 0, "default": 60},
        "long_query_seconds": {"type": "number", "minimum": 0, "default": 300},
    })

    def run(self) -> dict[str, Any]:
        flt = SessionFilter.from_args({"idle_in_transaction_seconds": 60, "long_query_seconds": 300,
                                       **self.args})
        with self.session() as conn:
            everything = list_sessions(conn)
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
                "pids": [s["pid"] for s in offending]}

    @classmethod
    def summarize(cls, result: Any) -> str:
        return (f"{result['offending_count']} offending sessions ({result['idle_in_transaction_count']} idle "
                f"in transaction, {result['long_running_count']} long-running; oldest "
                f"{result['oldest_seconds']:.0f}s); {result['protected_count']} protected")


@register
class Locks(PgAction):
    """Blocked sessions and their blocking chains (pg_blocking_pids), with the root blockers.

    ```yaml
    - id: locks
      action: postgres.locks
      with: {min_wait_seconds: 5}
      expect:
        - that: "result.blocked_count == 0"
          severity: warning
          message: "{{ result.blocked_count }} sessions waiting on locks held by {{ result.root_pids }}"
    ```
    """

    name = "postgres.locks"
    summary = "Blocked sessions, blocking chains and root blockers (pg_blocking_pids)"
    schema = type_schema({"database": DATABASE,
                          "min_wait_seconds": {"type": "number", "minimum": 0, "default": 0}})

    def run(self) -> dict[str, Any]:
        min_wait = float(self.args.get("min_wait_seconds", 0))
        with self.session() as conn:
            everything = {s["pid"]: s for s in list_sessions(conn)}
            waits = {r["pid"]: r["wait"] for r in pg.fetch(
                conn, "SELECT pid, extract(epoch FROM now() - min(waitstart))::float AS wait "
                      "FROM pg_locks WHERE NOT granted AND pid IS NOT NULL GROUP BY pid")}
        db = self.args.get("database")
        blocked = []
        for s in everything.values():
            wait = waits.get(s["pid"]) or s["duration_seconds"]
            if s["blocked_by"] and wait >= min_wait and (not db or s["database"] == db):
                blocked.append({**s, "wait_seconds": round(wait, 1)})
        # Walk each chain up through every session, not only the ones over min_wait: in a chain
        # C -> B -> A where B started waiting on A recently, B is under min_wait, and looking
        # only at the listed waiters found no root at all (end-blockers then terminated nothing).
        chains = {b["pid"]: _upstream(b["pid"], everything) for b in blocked}
        blocker_pids = sorted({p for up in chains.values() for p in up})
        blockers = [{**everything[p], "blocking_count": sum(p in up for up in chains.values())}
                    for p in blocker_pids if p in everything]
        roots = [b for b in blockers if not b["blocked_by"]]
        active = sum(1 for s in everything.values() if s["state"] == "active"
                     and s["backend_type"] == "client backend")
        return {"blocked": blocked, "blocked_count": len(blocked), "blockers": blockers,
                "root_blockers": roots, "root_pids": [r["pid"] for r in roots],
                "max_wait_seconds": max((b["wait_seconds"] for b in blocked), default=0),
                "lock_wait_pct": round(100.0 * len(blocked) / active, 1) if active else 0.0}

    @classmethod
    def summarize(cls, result: Any) -> str:
        if not result["blocked_count"]:
            return "no session is waiting on a lock"
        return (f"{result['blocked_count']} blocked sessions (longest {result['max_wait_seconds']:.0f}s, "
                f"{result['lock_wait_pct']}% of active); root blockers: {result['root_pids']}")


def _upstream(pid: int, everything: dict[int, dict[str, Any]]) -> set[int]:
    """Every pid that `pid` waits on, directly or through other waiters (cycles are tolerated:
    the deadlock detector breaks them, but a snapshot may still show one)."""
    seen: set[int] = set()
    todo = list(everything[pid]["blocked_by"])
    while todo:
        p = todo.pop()
        if p in seen or p == pid:
            continue
        seen.add(p)
        todo += everything[p]["blocked_by"] if p in everything else []
    return seen


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
            preloaded = "pg_stat_statements" in pg.fetch(
                conn, "SELECT current_setting('shared_preload_libraries') AS v")[0]["v"]
            if not installed or not preloaded:
                why = ("the pg_stat_statements extension is not installed in this database "
                       "(CREATE EXTENSION pg_stat_statements)" if not installed else
                       "pg_stat_statements is not in shared_preload_libraries (needs a restart)")
                return {"available": False, "reason": f"no statement statistics: {why}; use "
                        "postgres.sessions / postgres.locks and the slow-query log instead",
                        "statements": [], "slow_count": 0, "slowest_mean_ms": 0}
            rows = pg.fetch(conn, self._SQL, {"min_calls": self.args.get("min_calls", 1),
                                              "db": self.args.get("database") or None,
                                              "limit": self.args.get("limit", 10)})
        for r in rows:
            r["query"] = pg.redact_sql(r["query"])
        return {"available": True, "reason": "", "statements": rows,
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


_READ_VERBS = ("select", "with", "values", "table", "show", "explain")
# Functions that act on the server even inside a READ ONLY transaction.
_SIDE_EFFECTS = re.compile(
    r"\b(pg_terminate_backend|pg_cancel_backend|pg_reload_conf|pg_rotate_logfile|pg_switch_wal|"
    r"pg_promote|pg_create_\w+|pg_drop_replication_slot|pg_replication_origin_\w+|pg_file_\w+|"
    r"pg_advisory\w*|lo_import|lo_export|lo_unlink|dblink\w*|set_config|pg_sleep\w*)\s*\(", re.I)


@register
class Query(PgAction):
    """Run one read-only statement (SELECT / WITH / VALUES / TABLE / SHOW / EXPLAIN) in a READ ONLY
    transaction that is rolled back; anything else, several statements, or admin functions such
    as pg_terminate_backend are refused.

    ```yaml
    - id: waiting
      action: postgres.query
      with:
        sql: "SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
      outputs: {waiting: "result.rows[0].n"}
    ```
    """

    name = "postgres.query"
    summary = "A single read-only SQL statement in a READ ONLY transaction"
    schema = type_schema({"database": DATABASE, "sql": {"type": "string", "minLength": 1},
                          "params": {"type": ["array", "object"]},
                          "max_rows": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 100}},
                         required=["sql"])

    @classmethod
    def validate_args(cls, args: dict[str, Any]) -> list[tuple[str, str]]:
        sql = args.get("sql")
        if not isinstance(sql, str) or is_template(sql):
            return []
        problem = _refusal(sql)
        return [("sql", problem)] if problem else []

    def run(self) -> dict[str, Any]:
        sql = self.args["sql"]
        problem = _refusal(sql)
        if problem:
            raise ActionError(f"postgres.query refused: {problem}")
        limit = int(self.args.get("max_rows", 100))
        from psycopg import errors

        with self.session() as conn:
            conn.execute("BEGIN READ ONLY")
            try:
                cur = conn.execute(sql, self.args.get("params"), prepare=True)  # prepared: one statement
                columns = [c.name for c in cur.description or []]
                rows = cur.fetchmany(limit + 1) if cur.description else []
            except errors.ReadOnlySqlTransaction:
                raise ActionError("postgres.query refused: the statement tries to write "
                                  "(it ran in a READ ONLY transaction)") from None
            except errors.SyntaxError as e:
                raise ActionError(f"postgres.query: {str(e).splitlines()[0]}") from None
            finally:
                if not conn.broken:
                    conn.execute("ROLLBACK")
        return {"columns": columns, "rows": [{c: _jsonable(v) for c, v in zip(columns, r, strict=False)}
                                             for r in rows[:limit]],
                "row_count": min(len(rows), limit), "truncated": len(rows) > limit}


def _refusal(sql: str) -> str:
    body = re.sub(r"--[^\n]*|/\*.*?\*/", " ", sql, flags=re.S).strip()
    verb = body.split(None, 1)[0].lower() if body else ""
    if verb not in _READ_VERBS:
        return f"only a single read-only statement is allowed ({', '.join(_READ_VERBS)}), got {verb!r}"
    bad = _SIDE_EFFECTS.search(body)
    if bad:
        return (f"{bad.group(1)}() has side effects; use postgres.cancel / postgres.terminate / a "
                "dedicated action")
    return ""


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, datetime | date):
        return v.isoformat()
    if isinstance(v, timedelta):
        return v.total_seconds()
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, bytes | memoryview):
        return bytes(v).hex()
    return str(v)



class _SignalBackends(PgAction):
    """Shared plan/apply of cancel and terminate: select, bound by max_targets, re-check, signal."""

    read_only = False
    function = ""
    operation = ""
    schema = type_schema({**SELECTION_SCHEMA,
                          "max_targets": {"type": "integer", "minimum": 1, "default": 20}})

    @classmethod
    def validate_args(cls, args: dict[str, Any]) -> list[tuple[str, str]]:
        errors = []
        if not any(k in args for k in ("state", "min_duration", "pids", "idle_in_transaction_seconds",
                                        "long_query_seconds")):
            errors.append(("state", "select targets with state / min_duration / pids / "
                                    "idle_in_transaction_seconds / long_query_seconds (refusing to "
                                    f"{cls.operation} every session)"))
        return errors

    def _select(self, conn: Any, passed_over: list[str] | None = None) -> list[dict[str, Any]]:
        """The matching sessions; with explicit `pids`, why each other requested pid is left
        alone goes to `passed_over` (a root blocker that is a superuser session, say)."""
        flt = SessionFilter.from_args(self.args)
        if not flt.selective:
            raise ActionError(f"{self.name}: no selector given; refusing to {self.operation} every session")
        everything = list_sessions(conn)
        targets = [s for s in everything if flt.matches(s)]
        if passed_over is not None and flt.pids:
            found = {s["pid"]: s for s in everything}
            chosen = {s["pid"] for s in targets}
            passed_over += [f"pid {p} ({_why_not(found.get(p), flt)})" for p in flt.pids if p not in chosen]
        return targets

    def plan(self) -> Plan:
        passed_over: list[str] = []
        with self.session() as conn:
            targets = self._select(conn, passed_over)
        limit = int(self.args.get("max_targets", 20))
        if len(targets) > limit:
            raise ActionError(f"{self.name}: {len(targets)} sessions match, more than max_targets={limit}; "
                              "narrow the filters or raise max_targets deliberately")
        changes = [Change(target=f"backend pid {s['pid']}", operation=self.operation,
                          before=f"{s['state']} for {s['duration_seconds']:.0f}s (app="
                                 f"{s['application_name'] or '-'}, user={s['user']}, db={s['database']})",
                          after="terminated" if self.operation == "terminate" else "query cancelled",
                          detail=(s["query"] or "")[:120]) for s in targets]
        keys = [{"pid": s["pid"], "backend_start": s["backend_start"]} for s in targets]
        left = f"; not touched: {', '.join(passed_over)}" if passed_over else ""
        return Plan(summary=f"{self.operation} {len(targets)} backend(s){left}", changes=changes,
                    data={"targets": keys})

    def apply(self, plan: Plan) -> dict[str, Any]:
        planned = {(t["pid"], t["backend_start"]) for t in plan.data.get("targets", [])}
        done: list[int] = []
        skipped: list[dict[str, Any]] = []
        with self.session() as conn:
            # Re-select: a pid that was reused (different backend_start) or a session that no
            # longer matches (it committed meanwhile) is left alone.
            still = {(s["pid"], s["backend_start"]) for s in self._select(conn)}
            signalled_at = pg.fetch(conn, "SELECT clock_timestamp() AS t")[0]["t"]
            for pid, start in sorted(planned):
                self.ctx.check_cancelled()
                if (pid, start) not in still:
                    skipped.append({"pid": pid, "reason": "gone or no longer matching"})
                    continue
                row = pg.fetch(conn, f"SELECT {self.function}(pid) AS ok FROM pg_stat_activity "
                                     "WHERE pid = %s AND backend_start = %s::timestamptz", (pid, start))
                if row and row[0]["ok"]:
                    done.append(pid)
                else:
                    skipped.append({"pid": pid, "reason": "gone before the signal"})
            self._wait_done(conn, done, signalled_at)
        key = "terminated" if self.operation == "terminate" else "cancelled"
        return {key: done, f"{key}_count": len(done), "skipped": skipped, "skipped_count": len(skipped)}

    def _wait_done(self, conn: Any, pids: list[int], signalled_at: Any, timeout: float = 5.0) -> None:
        """Signals are asynchronous: wait (up to 5 s) until terminated backends are gone and
        cancelled queries have stopped, so that verify sees the effect.  Signalling everyone first
        and waiting once is faster than pg_terminate_backend(pid, timeout) per backend (16
        terminations: 2 s that way)."""
        still = ("SELECT count(*) AS n FROM pg_stat_activity WHERE pid = ANY(%s)" if self.operation ==
                 "terminate" else "SELECT count(*) AS n FROM pg_stat_activity WHERE pid = ANY(%s) "
                 "AND state = 'active' AND query_start < %s")
        params = (pids,) if self.operation == "terminate" else (pids, signalled_at)
        deadline = time.monotonic() + (self.ctx.remaining(timeout) or timeout)
        while pids and time.monotonic() < deadline:
            if not pg.fetch(conn, still, params)[0]["n"]:
                return
            self.ctx.sleep(0.02)

    @classmethod
    def summarize(cls, result: Any) -> str:
        key = "terminated" if "terminated" in result else "cancelled"
        return f"{key} {result[f'{key}_count']} backend(s) {result[key]}; skipped {result['skipped_count']}"


def _why_not(s: dict[str, Any] | None, flt: SessionFilter) -> str:
    if s is None:
        return "no such client session: gone, or not a client backend"
    if s["application_name"] == pg.APPLICATION_NAME:
        return "opsctl's own session"
    if s["superuser"] and not flt.include_superusers:
        return (f"superuser session of {s['user']}, {s['state'] or 'no state'}: never signalled "
                "automatically; end it by hand or set include_superusers")
    if s["backend_type"] != "client backend" and not flt.include_replication:
        return f"{s['backend_type']}: replication is never signalled unless include_replication is set"
    return "does not match the step's other filters"


@register
class Terminate(_SignalBackends):
    """pg_terminate_backend on the sessions selected by filters (then waits up to 5 s for them to exit).
    Never opsctl's own sessions, superusers or replication backends unless asked; at most
    `max_targets`; each target is re-checked (same pid and backend_start) just before the signal.

    ```yaml
    - id: kill
      action: postgres.terminate
      with: {database: app, idle_in_transaction_seconds: 60, long_query_seconds: 300, max_targets: 20}
    ```
    """

    name = "postgres.terminate"
    summary = "pg_terminate_backend on sessions selected by filters (blast radius: max_targets)"
    function = "pg_terminate_backend"
    operation = "terminate"


@register
class Cancel(_SignalBackends):
    """pg_cancel_backend (cancel the running query, keep the session) on sessions selected by
    filters, with the same guards as postgres.terminate.

    ```yaml
    - id: cancel
      action: postgres.cancel
      with: {state: active, min_duration: 300, application_name: "report-*", max_targets: 5}
    ```
    """

    name = "postgres.cancel"
    summary = "pg_cancel_backend on sessions selected by filters (blast radius: max_targets)"
    function = "pg_cancel_backend"
    operation = "cancel"


_ROLE_SETTINGS = ("statement_timeout", "idle_in_transaction_session_timeout", "lock_timeout",
                  "idle_session_timeout")
_DURATION = re.compile(r"^\d+\s*(us|ms|s|min|h|d)?$")


@register
class SetRoleSetting(PgAction):
    """ALTER ROLE ... [IN DATABASE ...] SET a timeout guard (statement_timeout,
    idle_in_transaction_session_timeout, lock_timeout, idle_session_timeout); `value: null` resets
    it.  The plan shows the old value; it applies to sessions opened afterwards.

    ```yaml
    - id: guard
      action: postgres.set_role_setting
      with: {role: app, database: app, setting: idle_in_transaction_session_timeout, value: 60s}
    ```
    """

    name = "postgres.set_role_setting"
    read_only = False
    summary = "ALTER ROLE ... SET a timeout guard (plan shows old -> new)"
    schema = type_schema({"role": {"type": "string", "minLength": 1}, "database": DATABASE,
                          "setting": {"type": "string", "enum": list(_ROLE_SETTINGS)},
                          "value": {"type": ["string", "integer", "null"]}},
                         required=["role", "setting", "value"])

    @classmethod
    def validate_args(cls, args: dict[str, Any]) -> list[tuple[str, str]]:
        value = args.get("value")
        if value is None or is_template(value) or _DURATION.match(str(value)):
            return []
        return [("value", f"expected a duration such as 30s, 500ms, 5min or 0 (got {value!r})")]

    def _current(self, conn: Any) -> str | None:
        role, db = self.args["role"], self.args.get("database")
        if not pg.fetch(conn, "SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)):
            raise ActionError(f"postgres.set_role_setting: role {role!r} does not exist")
        rows = pg.fetch(conn, "SELECT unnest(setconfig) AS kv FROM pg_db_role_setting s "
                              "JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname = %s AND s.setdatabase = "
                              "coalesce((SELECT oid FROM pg_database WHERE datname = %s), 0)", (role, db))
        prefix = self.args["setting"] + "="
        return next((r["kv"][len(prefix):] for r in rows if r["kv"].startswith(prefix)), None)

    def plan(self) -> Plan:
        problems = self.validate_args(self.args)
        if problems:
            raise ActionError(f"{self.name}: {problems[0][1]}")
        new = None if self.args["value"] is None else str(self.args["value"]).replace(" ", "")
        with self.session() as conn:
            old = self._current(conn)
        scope = f"role {self.args['role']}" + (f" in database {self.args['database']}"
                                                if self.args.get("database") else "")
        if old == new:
            return Plan(summary=f"{self.args['setting']} of {scope} is already {new}")
        return Plan(summary=f"set {self.args['setting']} for {scope}",
                    changes=[Change(target=scope, operation="alter role set", before=old, after=new,
                                    detail=f"{self.args['setting']}; applies to new sessions")],
                    data={"before": old, "after": new})

    def apply(self, plan: Plan) -> dict[str, Any]:
        from psycopg import sql

        role, db, setting = self.args["role"], self.args.get("database"), self.args["setting"]
        with self.session() as conn:
            if self._current(conn) != plan.data["before"]:
                raise ActionError(f"{self.name}: {setting} of role {role} changed since the plan; re-run")
            stmt = sql.SQL("ALTER ROLE {}").format(sql.Identifier(role))
            if db:
                stmt += sql.SQL(" IN DATABASE {}").format(sql.Identifier(db))
            after = plan.data["after"]
            stmt += (sql.SQL(" RESET {}").format(sql.Identifier(setting)) if after is None else
                     sql.SQL(" SET {} = {}").format(sql.Identifier(setting), sql.Literal(after)))
            conn.execute(stmt)
        return {"role": role, "setting": setting, "before": plan.data["before"], "after": after}
