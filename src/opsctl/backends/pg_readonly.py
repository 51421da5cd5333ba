"""The PostgreSQL read-only guard: what a read-only call (read-only step, plan(), dry-run) runs as.

Two things hold on the server for every statement of a read-only call, whatever the action sends:

* ``default_transaction_read_only = on``: every transaction is READ ONLY, so INSERT/UPDATE/DELETE,
  DDL, ``nextval()``, ``SELECT ... FOR UPDATE`` and the like fail ("cannot execute ... in a
  read-only transaction").  That is not enough: functions with side effects run in READ ONLY
  transactions (``pg_terminate_backend``, ``pg_cancel_backend``, advisory locks, ``set_config``).
* ``SET ROLE`` to a role that can signal no backend.  ``pg_terminate_backend`` and
  ``pg_cancel_backend`` check the *current* role (the one SET ROLE chose, not the login role): it
  must be a superuser, have the privileges of ``pg_signal_backend``, or have the privileges of the
  target session's role.  The role is ``postgres.read_only_role`` when configured (checked: it must
  exist, be granted to the login role, not be a superuser, not have ``pg_signal_backend``, and not
  have the privileges of any login role), else ``pg_monitor`` when the login role may SET ROLE to it
  (superusers and members of pg_monitor): it reads every session, lock and statistic but signals
  nothing.  Without either, read-only calls run as the login role and only the READ ONLY
  transaction and (for ``postgres.query``) the parse-tree judge stand.

What this cannot stop: Python code of an action that sends ``RESET ROLE`` itself (SQL from a
runbook cannot: ``postgres.query`` accepts no SET/RESET and no ``set_config``), advisory locks and
other side effects that need no privilege, and a login role that may signal backends while no
read-only role is available.
"""

from __future__ import annotations

import re
from typing import Any

from opsctl.errors import BackendError, ReadOnlyViolation

AUTO_ROLE = "pg_monitor"

_ROLE = """
SELECT r.rolname, pg_has_role(session_user, r.oid, 'MEMBER') AS member, r.rolsuper AS superuser,
       pg_has_role(r.oid, 'pg_signal_backend', 'USAGE') AS signal_backend,
       (SELECT array_agg(o.rolname ORDER BY o.rolname) FROM pg_roles o
         WHERE o.rolcanlogin AND pg_has_role(r.oid, o.oid, 'USAGE')) AS login_roles
FROM pg_roles r WHERE r.rolname = %s
"""


def choose_role(conn: Any, configured: str) -> str | None:
    """The role read-only calls SET ROLE to, or None (run as the login role)."""
    from psycopg.rows import dict_row

    name = configured or AUTO_ROLE
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_ROLE, (name,))
        row = cur.fetchone()
    problem = _unsafe(name, row)
    if not problem:
        return name
    if configured:
        raise BackendError("postgres", f"misconfigured: postgres.read_only_role {name!r} {problem}; it "
                                       "must be a role granted to the login role that cannot signal "
                                       "backends, e.g. CREATE ROLE opsctl_ro NOLOGIN IN ROLE pg_monitor, "
                                       "pg_read_all_data; GRANT opsctl_ro TO <login role>")
    return None


def _unsafe(name: str, row: dict[str, Any] | None) -> str:
    if row is None:
        return "does not exist"
    if not row["member"]:
        return "is not granted to the login role (SET ROLE would fail)"
    if row["superuser"]:
        return "is a superuser"
    if row["signal_backend"]:
        return "has the privileges of pg_signal_backend"
    if row["login_roles"]:
        return (f"has the privileges of login role(s) {', '.join(row['login_roles'])} (it may signal "
                "their sessions)")
    return ""


def mode_sql(conn: Any, read_only: bool, role: str | None) -> str:
    """The SET statements that put the shared connection in the mode of this call."""
    if not read_only:
        return "RESET ROLE; RESET default_transaction_read_only"
    from psycopg import sql

    set_role = sql.SQL("SET ROLE {}").format(sql.Identifier(role)).as_string(conn) if role else "RESET ROLE"
    return f"SET default_transaction_read_only = on; {set_role}"


# PostgreSQL 15: "must be a member of the role whose process is being terminated or member of
# pg_signal_backend", "must be a superuser to cancel superuser query"; 16+: "permission denied to
# terminate process"
_SIGNAL = re.compile(r"terminat|cancel|signal", re.I)


def violation(e: Exception, role: str | None) -> ReadOnlyViolation | None:
    """The server's refusal of a mutation in a read-only call, as a ReadOnlyViolation (None for
    any other error)."""
    from psycopg import errors

    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    if isinstance(e, errors.ReadOnlySqlTransaction):
        return ReadOnlyViolation("postgres", "a write", f"{first}; read-only calls run in READ ONLY "
                                                        "transactions")
    if isinstance(e, errors.InsufficientPrivilege) and _SIGNAL.search(first):
        return ReadOnlyViolation("postgres", "signalling a backend (pg_terminate_backend / "
                                             "pg_cancel_backend)",
                                 f"{first}; read-only calls run as role {role or 'the login role'}")
    return None


def permission_hint(role: str | None) -> str:
    if not role:
        return ""
    return (f" (read-only steps run as role {role}, which may not signal backends: to read application "
            "tables, set postgres.read_only_role to a role that may, e.g. CREATE ROLE opsctl_ro NOLOGIN "
            "IN ROLE pg_monitor, pg_read_all_data; GRANT opsctl_ro TO <login role>)")
