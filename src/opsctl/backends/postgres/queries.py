"""Running a statement: its rows as dicts, or (an optional probe) None and why it could not run; a
user's statement prepared, a statement's plan, a role setting.  psycopg's errors stay in here."""

from __future__ import annotations

import secrets
from contextlib import suppress
from typing import Any

from opsctl.backends.postgres.connection import clean
from opsctl.backends.postgres.privileges import missing_privilege
from opsctl.errors import ActionError


def fetch(conn: Any, query: str, params: Any = None) -> list[dict[str, Any]]:
    from psycopg.rows import dict_row

    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return list(cur.fetchall()) if cur.description else []


def optional_fetch(conn: Any, query: str, params: Any = None) -> tuple[list[dict[str, Any]] | None, str]:
    """An optional probe: its rows, or None and why it could not run (a missing privilege, an
    extension not loaded), so that the caller degrades to a warning instead of failing the step.
    Autocommit: a failed statement leaves the connection usable."""
    from psycopg import errors

    try:
        return fetch(conn, query, params), ""
    except errors.InsufficientPrivilege as e:
        text = clean(str(e), [])
        role = ""
        with suppress(Exception):
            role = str(conn.info.user)
        return None, f"permission denied ({text}): {missing_privilege(text, role)}"
    except errors.ObjectNotInPrerequisiteState as e:  # e.g. pg_stat_statements not preloaded
        return None, clean(str(e), [])
    except errors.UndefinedTable as e:
        return None, clean(str(e), [])


def current_database(conn: Any) -> str:
    return str(fetch(conn, "SELECT current_database() AS d")[0]["d"])


def fetch_prepared(conn: Any, statement: str, params: Any, max_rows: int,
                   what: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and at most ``max_rows`` rows of one statement sent prepared (the extended
    protocol takes one statement, never several).  A syntax error PostgreSQL finds in it is the
    statement's fault: ActionError ``what: <PostgreSQL's first line>``."""
    from psycopg import errors

    try:
        cur = conn.execute(statement, params, prepare=True)
        columns = [c.name for c in cur.description or []]
        return columns, (cur.fetchmany(max_rows) if cur.description else [])
    except errors.SyntaxError as e:
        raise ActionError(f"{what}: {str(e).splitlines()[0]}") from None


def explain(conn: Any, statement: str, nparams: int) -> tuple[dict[str, Any] | None, str]:
    """The plan of ``statement`` (EXPLAIN (FORMAT JSON), no ANALYZE: planned, never run; with
    ``nparams`` $n parameters the generic plan), or None and why PostgreSQL cannot plan it for
    this role (a missing privilege, table, column or function, parameter types it cannot infer)."""
    from psycopg import errors

    try:
        return _explain(conn, statement, nparams), ""
    except (errors.InsufficientPrivilege, errors.UndefinedTable, errors.UndefinedColumn,
            errors.UndefinedFunction, errors.DatatypeMismatch, errors.IndeterminateDatatype) as e:
        return None, str(e).splitlines()[0]


def _explain(conn: Any, statement: str, nparams: int) -> dict[str, Any]:
    from psycopg import errors

    if not nparams:
        return dict(fetch(conn, f"EXPLAIN (FORMAT JSON) {statement}")[0]["QUERY PLAN"][0])
    name = f"opsctl_explain_{secrets.token_hex(4)}"
    prepared = False
    try:
        with conn.transaction():  # READ ONLY, like every transaction of the read-only session
            conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            conn.execute(f"PREPARE {name} AS {statement}")
            prepared = True
            nulls = ", ".join(["NULL"] * nparams)
            return dict(fetch(conn, f"EXPLAIN (FORMAT JSON) EXECUTE {name}({nulls})")[0]["QUERY PLAN"][0])
    finally:
        if prepared:  # prepared statements outlive the transaction: never leave one behind
            with suppress(errors.InvalidSqlStatementName):
                conn.execute(f"DEALLOCATE {name}")


def alter_role_setting(conn: Any, role: str, database: str | None, setting: str, value: str | None) -> None:
    """ALTER ROLE role [IN DATABASE database] SET setting = value (RESET for None), every name
    quoted as an identifier and the value as a literal."""
    from psycopg import sql

    stmt = sql.SQL("ALTER ROLE {}").format(sql.Identifier(role))
    if database:
        stmt += sql.SQL(" IN DATABASE {}").format(sql.Identifier(database))
    stmt += (sql.SQL(" RESET {}").format(sql.Identifier(setting)) if value is None else
             sql.SQL(" SET {} = {}").format(sql.Identifier(setting), sql.Literal(value)))
    conn.execute(stmt)
