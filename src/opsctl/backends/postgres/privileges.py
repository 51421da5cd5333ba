"""A missing privilege: the error (exit 4) and what to GRANT, from PostgreSQL's own text."""

from __future__ import annotations

import re

from opsctl.errors import BackendError


class PrivilegeError(BackendError):
    """The role opsctl connects as lacks a privilege (exit 4, naming it).  A probe that the
    decision does not need catches it and degrades to a warning."""

    def __init__(self, message: str) -> None:
        super().__init__("postgres", f"permission denied: {message}")


_DENIED_ON = re.compile(r'permission denied for (view|table|relation|function|schema|sequence) "?([\w.]+)"?')


def missing_privilege(message: str, role: str = "") -> str:
    """What to grant, from PostgreSQL's "permission denied ..." text."""
    to = f" TO {role}" if role else ""
    if "terminate process" in message or "cancel query" in message or "pg_signal_backend" in message:
        return f"needs pg_signal_backend (GRANT pg_signal_backend{to})"
    if "to examine" in message:
        return f"needs pg_read_all_settings (GRANT pg_read_all_settings{to}, or pg_monitor)"
    found = _DENIED_ON.search(message)
    if found:
        kind, name = found.groups()
        if name.endswith("pg_stat_statements"):
            return (f"needs pg_read_all_stats and SELECT on {name} (GRANT pg_read_all_stats{to}; "
                    f"GRANT SELECT ON {name}{to})")
        if kind == "function":
            return f"needs EXECUTE on function {name} (GRANT EXECUTE ON FUNCTION {name}{to})"
        grant, on = ("USAGE", "SCHEMA") if kind == "schema" else ("SELECT", kind.upper() if kind == "sequence"
                                                                   else "TABLE")
        return f"needs {grant} on {kind} {name} (GRANT {grant} ON {on} {name}{to})"
    return "needs a privilege this role does not have (pg_monitor and pg_signal_backend cover opsctl)"
