"""PostgreSQL connections for the ``postgres.*`` actions, one module a concern:

- ``connection``: where to connect (environment section, libpq variables, ``DATABASE_URL``),
  ``connect()`` and its one-paragraph, password-free errors;
- ``client``: ``PgClient``, the run's one shared connection per database, read-only sessions;
- ``watch``: the hung-call watcher (Ctrl-C cancels on the server; a hung server's socket is cut);
- ``privileges``: ``PrivilegeError`` and what to GRANT;
- ``queries``: ``fetch`` / ``optional_fetch``, ``fetch_prepared`` (a user's statement), ``explain``,
  ``alter_role_setting``;
- ``sessions``: pg_stat_activity as diagnosis and targeting see it, and ``SessionFilter``.

Callers import from ``opsctl.backends.postgres``; psycopg is imported inside the functions.
"""

from opsctl.backends.postgres.client import PgClient
from opsctl.backends.postgres.connection import (
    APPLICATION_NAME,
    CONNECT_TIMEOUT,
    STATEMENT_TIMEOUT,
    PgSettings,
    clean,
    connect,
    settings_from,
)
from opsctl.backends.postgres.privileges import PrivilegeError, missing_privilege
from opsctl.backends.postgres.queries import (
    alter_role_setting,
    current_database,
    explain,
    fetch,
    fetch_prepared,
    optional_fetch,
)
from opsctl.backends.postgres.sessions import (
    HIDDEN,
    SELECTION_SCHEMA,
    SessionFilter,
    excluded_by_scope,
    list_sessions,
    redact_sql,
    require_visible,
)
from opsctl.backends.postgres.watch import HUNG_GRACE

__all__ = [
    "APPLICATION_NAME", "CONNECT_TIMEOUT", "HIDDEN", "HUNG_GRACE", "SELECTION_SCHEMA", "STATEMENT_TIMEOUT",
    "PgClient", "PgSettings", "PrivilegeError", "SessionFilter", "alter_role_setting", "clean", "connect",
    "current_database", "excluded_by_scope", "explain", "fetch", "fetch_prepared", "list_sessions",
    "missing_privilege", "optional_fetch", "redact_sql", "require_visible", "settings_from",
]
