"""Running a query: its rows as dicts, or (an optional probe) None and why it could not run."""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from opsctl.backends.postgres.connection import clean
from opsctl.backends.postgres.privileges import missing_privilege


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
