"""One user-supplied read-only statement."""

from __future__ import annotations

import re
from typing import Any

from opsctl.actions import register
from opsctl.actions.base import is_template, type_schema
from opsctl.actions.postgres.common import DATABASE, PgAction, jsonable
from opsctl.errors import ActionError

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
        return {"columns": columns, "rows": [{c: jsonable(v) for c, v in zip(columns, r, strict=False)}
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
