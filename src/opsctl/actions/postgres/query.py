"""One user-supplied read-only statement, judged on its parse tree before it is sent."""

from __future__ import annotations

from typing import Any

from opsctl.actions import register
from opsctl.actions.base import is_template, type_schema
from opsctl.actions.needs import Pg
from opsctl.actions.postgres.common import DATABASE, PgAction, jsonable
from opsctl.backends import postgres as pg
from opsctl.errors import ActionError


@register
class Query(PgAction):
    """Run one read-only statement (SELECT / WITH / VALUES / TABLE / SHOW / EXPLAIN) in a READ ONLY
    transaction that is rolled back.  The statement is judged on PostgreSQL's own parse tree
    (``opsctl.backends.pg_sql_guard``): one statement, no writes anywhere in it (writable CTEs,
    SELECT INTO, FOR UPDATE), and only functions on an allow-list (catalog reads, aggregates,
    formatting, date/time, JSON...): pg_terminate_backend, set_config, advisory locks or any
    user-defined function are refused, however they are spelled.  Like every read-only step it runs
    as a role that may not signal backends where the server allows it (``postgres.read_only_role``).

    ```yaml
    - id: waiting
      action: postgres.query
      with:
        sql: "SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
      outputs: {waiting: "result.rows[0].n"}
    ```
    """

    name = "postgres.query"
    permissions = (Pg(roles=("pg_monitor",),
                      note="SELECT on the application tables its sql reads, if any (read-only steps "
                           "then need postgres.read_only_role)"),)
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
        problem = _refusal(sql, args.get("params") is not None)
        return [("sql", problem)] if problem else []

    def run(self) -> dict[str, Any]:
        from opsctl.backends.pg_sql_guard import SHADOWED, judge

        sql, params = self.args["sql"], self.args.get("params")
        problem, functions, types = judge(sql, params is not None)
        if problem:
            raise ActionError(f"postgres.query refused: {problem}")
        limit = int(self.args.get("max_rows", 100))
        with self.session() as conn:
            conn.execute("BEGIN READ ONLY")
            try:
                # unqualified names resolve to the built-in functions the judge allowed, whatever
                # the role's search_path says (pg_catalog searched first)
                conn.execute("SELECT set_config('search_path', 'pg_catalog, ' || "
                             "current_setting('search_path'), true)")
                # ...unless a function of the same name exists elsewhere: overload resolution may
                # prefer it (a better match of argument types), so it must be named explicitly
                shadowed = (conn.execute(SHADOWED, [sorted(functions), sorted(types)]).fetchall()
                            if functions or types else [])
                if shadowed:
                    names = ", ".join(f"{schema}.{name}{'()' if what == 'function' else ''}"
                                      for name, schema, what in shadowed)
                    raise ActionError(f"postgres.query refused: {names} exist(s) outside pg_catalog and "
                                      "could be called instead of the built-in function or type (a "
                                      "domain's CHECK runs any function); write pg_catalog.NAME to use "
                                      "the built-in one")
                columns, rows = pg.fetch_prepared(conn, sql, params, limit + 1, "postgres.query")
            finally:
                if not conn.broken:
                    conn.execute("ROLLBACK")
        return {"columns": columns, "rows": [{c: jsonable(v) for c, v in zip(columns, r, strict=False)}
                                             for r in rows[:limit]],
                "row_count": min(len(rows), limit), "truncated": len(rows) > limit}


def _refusal(sql: str, with_params: bool) -> str:
    from opsctl.backends.pg_sql_guard import refusal

    return refusal(sql, with_params)
