"""Index hints (unused indexes, tables read by sequential scans) and the plan of a statement
(EXPLAIN without ANALYZE: planned, never run)."""

from __future__ import annotations

from typing import Any

from opsctl.actions import register
from opsctl.actions.base import type_schema
from opsctl.actions.needs import Pg
from opsctl.actions.postgres.common import DATABASE, PgAction, jsonable
from opsctl.backends import pg_sql_guard
from opsctl.backends import postgres as pg
from opsctl.errors import ArgumentError


@register
class IndexHints(PgAction):
    """Index hints from the statistics views (since the last stats reset): indexes never scanned
    (not unique, not a primary key: drop candidates, once the replicas agree) and tables read
    mostly by sequential scans over many rows (an index may be missing).

    ```yaml
    - id: index_hints
      action: postgres.index_hints
      with: {database: app, min_rows: 10000}
    ```
    """

    name = "postgres.index_hints"
    permissions = (Pg(roles=("pg_monitor",)),)
    summary = "Unused indexes and tables read by sequential scans (pg_stat_user_indexes / _tables)"
    schema = type_schema({"database": DATABASE,
                          "min_rows": {"type": "integer", "minimum": 0, "default": 10000},
                          "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}})

    _UNUSED = ("SELECT s.schemaname AS schema, s.relname AS table, s.indexrelname AS index, s.idx_scan,"
               " pg_relation_size(s.indexrelid) AS bytes"
               " FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid"
               " WHERE s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary"
               " ORDER BY bytes DESC, 3 LIMIT %(limit)s")
    _SEQ = ("SELECT schemaname AS schema, relname AS table, seq_scan, seq_tup_read,"
            " coalesce(idx_scan, 0) AS idx_scan, n_live_tup AS rows"
            " FROM pg_stat_user_tables"
            " WHERE seq_scan > coalesce(idx_scan, 0) AND n_live_tup >= %(min_rows)s AND seq_scan > 0"
            " ORDER BY seq_tup_read DESC LIMIT %(limit)s")

    def run(self) -> dict[str, Any]:
        args = {"limit": self.args.get("limit", 10), "min_rows": self.args.get("min_rows", 10000)}
        with self.session() as conn:
            unused = [jsonable(r) for r in pg.fetch(conn, self._UNUSED, args)]
            seq = [jsonable(r) for r in pg.fetch(conn, self._SEQ, args)]
        return {"unused": unused, "unused_count": len(unused),
                "unused_bytes": sum(int(r["bytes"] or 0) for r in unused),
                "seq_scanned": seq, "seq_scanned_count": len(seq)}

    @classmethod
    def summarize(cls, result: Any) -> str:
        return (f"{result['unused_count']} unused index(es), {result['seq_scanned_count']} table(s) read "
                "mostly by sequential scans")


@register
class Explain(PgAction):
    """The plan of one statement, EXPLAIN without ANALYZE: planned, never run (an UPDATE changes
    nothing), in the read-only session. `queryid` (or a list of them, slowest first: the first whose
    text is visible and is a SELECT/INSERT/UPDATE/DELETE) takes the full text from pg_stat_statements;
    its normalized parameters ($1...) get a generic plan (PREPARE + plan_cache_mode
    force_generic_plan; EXPLAIN EXECUTE with NULLs, deallocated after). Reports the plan's cost and
    its sequential scans; a statement it may not plan (permissions, an object gone) is `available:
    false` with the reason, not a failure.

    ```yaml
    - id: explain
      action: postgres.explain
      with: {queryid: "{{ steps.top.result.statements | map(attribute='queryid') | list }}"}
    ```
    """

    name = "postgres.explain"
    # pg_monitor includes pg_read_all_stats: other roles' statement texts in pg_stat_statements
    permissions = (Pg(roles=("pg_monitor",),
                      note="SELECT (UPDATE, INSERT, DELETE for a write) on the tables of the statement "
                           "it explains: EXPLAIN checks them; without them no plan, not a failure"),)
    summary = "EXPLAIN (no ANALYZE: never runs it) a statement or a pg_stat_statements queryid"
    schema = type_schema({"database": DATABASE,
                          "queryid": {"type": ["string", "integer", "array", "null"],
                                      "items": {"type": ["string", "integer", "null"]},
                                      "description": "a queryid, or a list (slowest first): the first "
                                                     "one whose text is visible and explainable"},
                          "statement": {"type": "string"}})

    @classmethod
    def validate_args(cls, args: dict[str, Any]) -> list[tuple[str, str]]:
        if not args.get("queryid") and not args.get("statement"):
            return [("queryid", "give a `queryid` (pg_stat_statements) or a `statement`")]
        return []

    def run(self) -> dict[str, Any]:
        with self.session() as conn:
            sql = str(self.args.get("statement") or "")
            if sql:
                refusal, nparams = pg_sql_guard.explainable(sql)
                if refusal:
                    raise ArgumentError(f"postgres.explain: {refusal}")
            else:
                found = self._from_stat_statements(conn)
                if isinstance(found, dict):
                    return found
                sql, nparams = found
            plan, why = pg.explain(conn, sql, nparams)
            if plan is None:
                return self._unavailable(f"cannot plan it: {why}", sql)
        return {"available": True, "reason": "", "statement": pg.redact_sql(sql)[:500],
                "generic_plan": nparams > 0, **_summary(plan)}

    def _from_stat_statements(self, conn: Any) -> tuple[str, int] | dict[str, Any]:
        """The first of the queryids whose text this role sees and that can be explained."""
        wanted = self.args.get("queryid")
        ids = [str(q) for q in (wanted if isinstance(wanted, list) else [wanted]) if q not in (None, "")]
        if not ids:
            return self._unavailable("no statement with a visible queryid (needs pg_read_all_stats to "
                                     "see other roles' statements)", "")
        rows, why = pg.optional_fetch(conn, "SELECT queryid::text AS queryid, query FROM pg_stat_statements "
                                      "WHERE queryid = ANY(%s::bigint[])", (ids,))
        if rows is None:
            return self._unavailable(why, "")
        texts = {r["queryid"]: str(r["query"]) for r in rows}
        reasons = []
        for qid in ids:
            sql = texts.get(qid)
            if sql is None or sql == pg.HIDDEN:
                reasons.append(f"{qid}: {'not in pg_stat_statements' if sql is None else 'text hidden'}")
                continue
            refusal, nparams = pg_sql_guard.explainable(sql)
            if not refusal:
                return sql, nparams
            reasons.append(f"{qid}: {refusal}")
        return self._unavailable("no explainable statement among the slowest (" + "; ".join(reasons[:5])
                                 + ")", "")

    @staticmethod
    def _unavailable(reason: str, sql: str) -> dict[str, Any]:
        return {"available": False, "reason": reason, "statement": pg.redact_sql(sql)[:500],
                "generic_plan": False, "total_cost": None, "plan_rows": None, "node": None,
                "seq_scans": [], "lines": []}

    @classmethod
    def summarize(cls, result: Any) -> str:
        if not result["available"]:
            return f"no plan: {result['reason']}"
        seq = ", ".join(f"{s['relation']} (~{s['rows']} rows)" for s in result["seq_scans"]) or "none"
        return f"{result['node']}, cost {result['total_cost']}; sequential scans: {seq}"


def _summary(explained: dict[str, Any]) -> dict[str, Any]:
    top = explained.get("Plan", {})
    seq: list[dict[str, Any]] = []
    lines: list[str] = []

    def walk(node: dict[str, Any], depth: int) -> None:
        kind = str(node.get("Node Type", ""))
        rel = node.get("Relation Name")
        lines.append(f"{'  ' * depth}{kind}{' on ' + rel if rel else ''} (cost "
                     f"{node.get('Startup Cost')}..{node.get('Total Cost')} rows={node.get('Plan Rows')})")
        if kind == "Seq Scan" and rel:
            seq.append({"relation": rel, "rows": node.get("Plan Rows"), "filter": node.get("Filter")})
        for child in node.get("Plans", []) or []:
            walk(child, depth + 1)

    walk(top, 0)
    return {"total_cost": top.get("Total Cost"), "plan_rows": top.get("Plan Rows"),
            "node": top.get("Node Type"), "seq_scans": seq, "lines": lines[:50]}
