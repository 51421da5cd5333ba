"""Blocked sessions and their blocking chains (read-only)."""

from __future__ import annotations

from typing import Any

from opsctl.actions import register
from opsctl.actions.base import type_schema
from opsctl.actions.needs import Pg
from opsctl.actions.postgres.common import DATABASE, PgAction
from opsctl.backends import postgres as pg
from opsctl.backends.postgres import SessionFilter, list_sessions


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
    permissions = (Pg(roles=("pg_monitor",)),)
    summary = "Blocked sessions, blocking chains and root blockers (pg_blocking_pids)"
    schema = type_schema({"database": DATABASE,
                          "application_name": {"type": "string", "description": "scope: glob on the "
                                               "application_name of the root blockers to report as targets"},
                          "user": {"type": "string", "description": "scope: glob on their role"},
                          "min_wait_seconds": {"type": "number", "minimum": 0, "default": 0},
                          "settle_seconds": {"type": "number", "minimum": 0, "maximum": 60, "default": 0,
                                             "description": "verify: when no session in scope waits, "
                                             "look again this much later (a blocker that comes back "
                                             "right after the fix is seen) and report that look"}})

    def run(self) -> dict[str, Any]:
        first = self._look()
        settle = float(self.args.get("settle_seconds", 0))
        if settle and not first["blocked_in_scope_count"]:
            self.ctx.sleep(settle)
            return {**self._look(), "settled_seconds": settle}
        return first

    def _look(self) -> dict[str, Any]:
        min_wait = float(self.args.get("min_wait_seconds", 0))
        with self.session() as conn:
            everything = {s["pid"]: s for s in list_sessions(conn)}
            waits = {r["pid"]: r["wait"] for r in pg.fetch(
                conn, "SELECT pid, extract(epoch FROM now() - min(waitstart))::float AS wait "
                      "FROM pg_locks WHERE NOT granted AND pid IS NOT NULL GROUP BY pid")}
            db = self.args.get("database") or pg.current_database(conn)
        scope = SessionFilter(database=db, application_name=self.args.get("application_name") or None,
                              user=self.args.get("user") or None)
        blocked = []
        for s in everything.values():
            wait = waits.get(s["pid"]) or s["duration_seconds"]
            if s["blocked_by"] and wait >= min_wait and s["database"] == db:
                blocked.append({**s, "wait_seconds": round(wait, 1)})
        # Walk each chain up through every session, not only the ones over min_wait: in a chain
        # C -> B -> A where B started waiting on A recently, B is under min_wait, and looking
        # only at the listed waiters found no root at all (end-blockers then terminated nothing).
        chains = {b["pid"]: _upstream(b["pid"], everything) for b in blocked}
        blocker_pids = sorted({p for up in chains.values() for p in up})
        blockers = [{**everything[p], "blocking_count": sum(p in up for up in chains.values())}
                    for p in blocker_pids if p in everything]
        roots = [b for b in blockers if not b["blocked_by"]]
        # the scope parameters choose which roots are targets; the others are reported, not targeted
        in_scope = [r for r in roots if scope.in_scope(r)]
        out_of_scope = [{"pid": r["pid"], "application_name": r["application_name"], "user": r["user"],
                         "excluded_by": scope.scope_miss(r) or "opsctl's own session"}
                        for r in roots if not scope.in_scope(r)]
        targets = {r["pid"] for r in in_scope}
        blocked_in_scope = [b for b in blocked if scope.in_scope(b) or chains[b["pid"]] & targets]
        active = sum(1 for s in everything.values() if s["state"] == "active"
                     and s["backend_type"] == "client backend")
        return {"blocked": blocked, "blocked_count": len(blocked), "blockers": blockers,
                # every root (the scope is applied by the mitigation, which says what it excluded)
                "root_blockers": roots, "root_pids": [r["pid"] for r in roots],
                "root_pids_in_scope": sorted(targets),
                "out_of_scope_roots": out_of_scope, "out_of_scope_count": len(out_of_scope),
                "excluded_by_scope": _excluded(out_of_scope),
                "blocked_in_scope": [b["pid"] for b in blocked_in_scope],
                "blocked_in_scope_count": len(blocked_in_scope),
                "max_wait_seconds": max((b["wait_seconds"] for b in blocked), default=0),
                "lock_wait_pct": round(100.0 * len(blocked) / active, 1) if active else 0.0}

    @classmethod
    def summarize(cls, result: Any) -> str:
        if not result["blocked_count"]:
            return "no session is waiting on a lock"
        return (f"{result['blocked_count']} blocked sessions (longest {result['max_wait_seconds']:.0f}s, "
                f"{result['lock_wait_pct']}% of active); root blockers: {result['root_pids']}"
                + (f"; {'; '.join(result['excluded_by_scope'])}" if result.get("excluded_by_scope") else ""))


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


def _excluded(roots: list[dict[str, Any]]) -> list[str]:
    """"1 root blocker of checkout-api excluded by application_name=report-job"."""
    groups: dict[tuple[str, str], int] = {}
    for r in roots:
        key = (r["application_name"] or "?", r["excluded_by"])
        groups[key] = groups.get(key, 0) + 1
    return [f"{n} root blocker{'s' if n > 1 else ''} of {app} excluded by {why}"
            for (app, why), n in sorted(groups.items())]
