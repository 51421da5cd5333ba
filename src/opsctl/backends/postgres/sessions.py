"""Sessions: the one view of pg_stat_activity shared by diagnosis and targeting, and the filter a
step selects its sessions with."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from opsctl.backends.postgres.connection import APPLICATION_NAME
from opsctl.backends.postgres.privileges import PrivilegeError
from opsctl.backends.postgres.queries import fetch

_SESSIONS = """
SELECT a.pid, a.backend_start::text AS backend_start, a.usename AS user, a.datname AS database,
       coalesce(a.application_name, '') AS application_name, host(a.client_addr) AS client_addr,
       coalesce(a.state, '') AS state, a.backend_type, coalesce(r.rolsuper, false) AS superuser,
       coalesce(extract(epoch FROM now() - a.state_change), 0)::float AS state_seconds,
       coalesce(extract(epoch FROM now() - a.query_start), 0)::float AS query_seconds,
       coalesce(extract(epoch FROM now() - a.xact_start), 0)::float AS xact_seconds,
       a.wait_event_type, a.wait_event, left(a.query, 200) AS query, pg_blocking_pids(a.pid) AS blocked_by
FROM pg_stat_activity a LEFT JOIN pg_roles r ON r.oid = a.usesysid
WHERE a.pid <> pg_backend_pid() AND (a.backend_type IN ('client backend', 'walsender')
   -- another role's session that this role may not look at (no pg_read_all_stats): even its
   -- backend_type is hidden; it is listed, as `hidden`, so that it is never silently missing
   OR (a.backend_type IS NULL AND a.usesysid IS NOT NULL AND a.datname IS NOT NULL))
"""


_PASSWORD_LITERAL = re.compile(r"(password\s*=?\s*)('(?:[^']|'')*'|\S+)", re.I)


def redact_sql(text: str | None) -> str:
    """Statement text as shown to people: `PASSWORD '...'` literals (ALTER ROLE, dblink...) masked."""
    return _PASSWORD_LITERAL.sub(r"\1'***'", text or "")


HIDDEN = "<insufficient privilege>"


def list_sessions(conn: Any) -> list[dict[str, Any]]:
    """Client and walsender backends except our own, with `duration_seconds` = time in the current
    state (for an active session: since its query started).  `hidden`: a session of another role
    whose state PostgreSQL does not show to this role (it lacks pg_read_all_stats)."""
    out = []
    for s in fetch(conn, _SESSIONS):
        s["hidden"] = s["backend_type"] is None
        s["backend_type"] = s["backend_type"] or "unknown (hidden)"
        s["duration_seconds"] = round(s["query_seconds"] if s["state"] == "active" else s["state_seconds"], 1)
        s["query"] = redact_sql(s["query"])
        for k in ("state_seconds", "query_seconds", "xact_seconds"):
            s[k] = round(s[k], 1)
        out.append(s)
    return out


def require_visible(conn: Any, sessions: list[dict[str, Any]], flt: SessionFilter) -> None:
    """A required probe: the sessions in scope must be visible.  Without pg_read_all_stats,
    pg_stat_activity hides the state of other roles' sessions, so a leak held by the application's
    role looks like nothing at all, and a run would "verify" an incident it cannot see."""
    hidden = [s for s in sessions if s["hidden"] and flt.in_scope(s) and not s["superuser"]]
    if not hidden:
        return
    role = str(conn.info.user)
    apps = ", ".join(f"{n} of {a or '?'} ({u})" for (a, u), n in sorted(_tally(hidden).items()))
    raise PrivilegeError(f"role {role} cannot see the state of {len(hidden)} session(s) in scope "
                         f"({apps}): pg_stat_activity hides other roles' sessions; needs "
                         f"pg_read_all_stats (GRANT pg_read_all_stats TO {role}, or pg_monitor)")


def _tally(sessions: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for s in sessions:
        key = (s["application_name"], s["user"] or "")
        out[key] = out.get(key, 0) + 1
    return out


def excluded_by_scope(sessions: list[dict[str, Any]], flt: SessionFilter) -> list[str]:
    """Sessions the step would have selected but for its scope (database / application_name /
    user), said per application: "2 sessions of checkout-api excluded by application_name=report-job"."""
    loose = replace(flt, database=None, application_name=None, user=None)
    groups: dict[tuple[str, str], int] = {}
    for s in sessions:
        if loose.matches(s) and not flt.matches(s):
            key = (s["application_name"] or "?", flt.scope_miss(s) or "scope")
            groups[key] = groups.get(key, 0) + 1
    return [f"{n} session{'s' if n > 1 else ''} of {app} excluded by {why}"
            for (app, why), n in sorted(groups.items())]


SELECTION_SCHEMA: dict[str, Any] = {
    "database": {"type": "string", "description": "datname to match (also the database to connect to)"},
    "application_name": {"type": "string", "description": "glob on application_name"},
    "user": {"type": "string", "description": "glob on the role name"},
    "state": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
              "description": "pg_stat_activity state(s): active, idle, idle in transaction..."},
    "min_duration": {"type": "number", "minimum": 0, "description": "seconds in the current state"},
    "idle_in_transaction_seconds": {"type": "number", "minimum": 0,
                                    "description": "select sessions idle in transaction for longer"},
    "long_query_seconds": {"type": "number", "minimum": 0,
                           "description": "select active queries running for longer"},
    "pids": {"type": "array", "items": {"type": "integer"}, "description": "restrict to these pids"},
    "include_superusers": {"type": "boolean", "default": False},
    "include_replication": {"type": "boolean", "default": False},
}


@dataclass(frozen=True)
class SessionFilter:
    """Which sessions a step selects.  The thresholds pair (idle-in-transaction / long query) selects
    a session over either one; `state` + `min_duration` is the general form; both combine with the
    database / application / user / pid filters."""

    database: str | None = None
    application_name: str | None = None
    user: str | None = None
    states: tuple[str, ...] = ()
    min_duration: float | None = None
    idle_in_transaction_seconds: float | None = None
    long_query_seconds: float | None = None
    pids: tuple[int, ...] | None = None
    include_superusers: bool = False
    include_replication: bool = False
    include_opsctl: bool = False

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> SessionFilter:
        state = args.get("state")
        pids = args.get("pids")
        return cls(database=args.get("database") or None, user=args.get("user") or None,
                   application_name=args.get("application_name") or None,
                   states=tuple([state] if isinstance(state, str) else state or ()),
                   min_duration=args.get("min_duration"),
                   idle_in_transaction_seconds=args.get("idle_in_transaction_seconds"),
                   long_query_seconds=args.get("long_query_seconds"),
                   pids=tuple(pids) if pids is not None else None,
                   include_superusers=bool(args.get("include_superusers", False)),
                   include_replication=bool(args.get("include_replication", False)))

    @property
    def selective(self) -> bool:
        """False when nothing narrows the selection down (refused for mutations)."""
        return bool(self.states or self.min_duration or self.pids is not None
                    or self.idle_in_transaction_seconds is not None or self.long_query_seconds is not None)

    def in_scope(self, s: dict[str, Any]) -> bool:
        """Inside the step's scope (database, application, role), whatever its state."""
        return s["application_name"] != APPLICATION_NAME and self.scope_miss(s) is None

    def scope_miss(self, s: dict[str, Any]) -> str | None:
        """Which scope parameter leaves the session out ("application_name=report-job"), or None."""
        from fnmatch import fnmatchcase

        if self.database and s["database"] != self.database:
            return f"database={self.database}"
        if self.application_name and not fnmatchcase(s["application_name"], self.application_name):
            return f"application_name={self.application_name}"
        if self.user and not fnmatchcase(s["user"] or "", self.user):
            return f"user={self.user}"
        return None

    def matches(self, s: dict[str, Any]) -> bool:
        if not self.include_opsctl and s["application_name"] == APPLICATION_NAME:
            return False
        if (s["superuser"] and not self.include_superusers) or \
                (s["backend_type"] != "client backend" and not self.include_replication):
            return False
        if self.scope_miss(s) is not None:
            return False
        if self.pids is not None and s["pid"] not in self.pids:
            return False
        if self.states and s["state"] not in self.states:
            return False
        if self.min_duration is not None and s["duration_seconds"] < self.min_duration:
            return False
        return self._over_thresholds(s)

    def _over_thresholds(self, s: dict[str, Any]) -> bool:
        idle_tx, long_q = self.idle_in_transaction_seconds, self.long_query_seconds
        if idle_tx is None and long_q is None:
            return True
        if idle_tx is not None and s["state"].startswith("idle in transaction") and \
                s["state_seconds"] >= idle_tx:
            return True
        return long_q is not None and s["state"] == "active" and s["query_seconds"] >= long_q
