"""Cancel / terminate backends selected by filters (mutating, bounded by max_targets)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from opsctl.actions import register
from opsctl.actions.base import type_schema
from opsctl.actions.needs import Pg
from opsctl.actions.postgres.common import PgAction
from opsctl.backends import postgres as pg
from opsctl.backends.postgres import SELECTION_SCHEMA, SessionFilter, list_sessions
from opsctl.errors import ActionError, OpsctlError
from opsctl.records import Change, Plan


class _SignalBackends(PgAction):
    """Shared plan/apply of cancel and terminate: select, bound by max_targets, re-check, signal."""

    read_only = False
    function = ""
    operation = ""
    schema = type_schema({**SELECTION_SCHEMA,
                          "max_targets": {"type": "integer", "minimum": 1, "default": 20}})

    @classmethod
    def validate_args(cls, args: dict[str, Any]) -> list[tuple[str, str]]:
        errors = []
        if not any(k in args for k in ("state", "min_duration", "pids", "idle_in_transaction_seconds",
                                        "long_query_seconds")):
            errors.append(("state", "select targets with state / min_duration / pids / "
                                    "idle_in_transaction_seconds / long_query_seconds (refusing to "
                                    f"{cls.operation} every session)"))
        return errors

    def _filter(self, conn: Any) -> SessionFilter:
        """The step's filter; no `database` means the database opsctl is connected to (the
        runbooks' "empty: the environment's database")."""
        flt = SessionFilter.from_args(self.args)
        if not flt.selective:
            raise ActionError(f"{self.name}: no selector given; refusing to {self.operation} every session")
        return flt if flt.database else replace(flt, database=pg.current_database(conn))

    def _select(self, conn: Any, passed_over: list[str] | None = None,
                excluded: list[str] | None = None) -> list[dict[str, Any]]:
        """The matching sessions; with explicit `pids`, why each other requested pid is left
        alone goes to `passed_over` (a root blocker that is a superuser session, say); what the
        scope (database / application_name / user) left out goes to `excluded`."""
        flt = self._filter(conn)
        everything = list_sessions(conn)
        pg.require_visible(conn, everything, flt)
        targets = [s for s in everything if flt.matches(s)]
        if excluded is not None:
            excluded += pg.excluded_by_scope(everything, flt)
        if passed_over is not None and flt.pids:
            found = {s["pid"]: s for s in everything}
            chosen = {s["pid"] for s in targets}
            passed_over += [f"pid {p} ({_why_not(found.get(p), flt)})" for p in flt.pids if p not in chosen
                            and (excluded is None or p not in found or not flt.scope_miss(found[p]))]
        return targets

    def plan(self) -> Plan:
        passed_over: list[str] = []
        excluded: list[str] = []
        with self.session() as conn:
            targets = self._select(conn, passed_over, excluded)
        limit = int(self.args.get("max_targets", 20))
        if len(targets) > limit:
            raise ActionError(f"{self.name}: {len(targets)} sessions match, more than max_targets={limit}; "
                              "narrow the filters or raise max_targets deliberately")
        changes = [Change(target=f"backend pid {s['pid']}", operation=self.operation,
                          before=f"{s['state']} for {s['duration_seconds']:.0f}s (app="
                                 f"{s['application_name'] or '-'}, user={s['user']}, db={s['database']})",
                          after="terminated" if self.operation == "terminate" else "query cancelled",
                          detail=(s["query"] or "")[:120],
                          # a plan file is stale when the session changed, not when it aged
                          state={"backend_start": s["backend_start"], "state": s["state"],
                                 "application_name": s["application_name"], "user": s["user"],
                                 "database": s["database"]}) for s in targets]
        keys = [{"pid": s["pid"], "backend_start": s["backend_start"]} for s in targets]
        scope = f"; {', '.join(excluded)}" if excluded else ""
        left = f"; not touched: {', '.join(passed_over)}" if passed_over else ""
        return Plan(summary=f"{self.operation} {len(targets)} backend(s){scope}{left}", changes=changes,
                    data={"targets": keys, "excluded_by_scope": excluded}, warnings=excluded)

    def apply(self, plan: Plan) -> dict[str, Any]:
        planned = {(t["pid"], t["backend_start"]) for t in plan.data.get("targets", [])}
        done: list[int] = []
        skipped: list[dict[str, Any]] = []
        attempted: list[tuple[int, str]] = []  # signals sent (or in flight when stopped)
        key = "terminated" if self.operation == "terminate" else "cancelled"
        try:
            with self.session() as conn:
                # Re-select: a pid that was reused (different backend_start) or a session that no
                # longer matches (it committed meanwhile) is left alone.
                still = {(s["pid"], s["backend_start"]) for s in self._select(conn)}
                signalled_at = pg.fetch(conn, "SELECT clock_timestamp() AS t")[0]["t"]
                for pid, start in sorted(planned):
                    self.ctx.check_cancelled()
                    if (pid, start) not in still:
                        skipped.append({"pid": pid, "reason": "gone or no longer matching"})
                        continue
                    attempted.append((pid, start))
                    row = pg.fetch(conn, f"SELECT {self.function}(pid) AS ok FROM pg_stat_activity "
                                         "WHERE pid = %s AND backend_start = %s::timestamptz", (pid, start))
                    if row and row[0]["ok"]:
                        done.append(pid)
                    else:
                        skipped.append({"pid": pid, "reason": "gone before the signal"})
                self._wait_done(conn, done, signalled_at)
        except OpsctlError as e:
            # stopped in the middle of the batch (Ctrl-C, deadline, lost connection): say exactly
            # which targets are gone, counting a signal whose answer was lost on the way, so
            # that the run log is right and --resume re-plans only what is left
            if self.operation == "terminate" and attempted:
                done = self._gone(attempted, fallback=done)
            rest = sorted(p for p, _ in planned if p not in done and p not in {s["pid"] for s in skipped})
            raise e.with_partial({key: sorted(done), f"{key}_count": len(done), "skipped": skipped,
                                  "skipped_count": len(skipped), "not_done": rest,
                                  "not_done_count": len(rest)},
                                 f"{len(done)} of {len(planned)} backend(s) {key}, {len(rest)} not "
                                 "signalled (--resume re-plans them)") from None
        return {key: done, f"{key}_count": len(done), "skipped": skipped, "skipped_count": len(skipped)}

    def _gone(self, attempted: list[tuple[int, str]], fallback: list[int]) -> list[int]:
        """Which of the signalled backends no longer exist, looked up on a session that a Ctrl-C
        does not cancel (one short query, bounded by statement_timeout)."""
        try:
            with self.session(interruptible=False) as conn:
                alive = {(r["pid"], r["s"]) for r in pg.fetch(
                    conn, "SELECT pid, backend_start::text AS s FROM pg_stat_activity WHERE pid = ANY(%s)",
                    ([p for p, _ in attempted],))}
        except OpsctlError:
            return sorted(fallback)
        return sorted(p for p, start in attempted if (p, start) not in alive)

    def _wait_done(self, conn: Any, pids: list[int], signalled_at: Any, timeout: float = 5.0) -> None:
        """Signals are asynchronous: wait (up to 5 s) until terminated backends are gone and
        cancelled queries have stopped, so that verify sees the effect.  Signalling everyone first
        and waiting once is faster than pg_terminate_backend(pid, timeout) per backend (16
        terminations: 2 s that way)."""
        still = ("SELECT count(*) AS n FROM pg_stat_activity WHERE pid = ANY(%s)" if self.operation ==
                 "terminate" else "SELECT count(*) AS n FROM pg_stat_activity WHERE pid = ANY(%s) "
                 "AND state = 'active' AND query_start < %s")
        params = (pids,) if self.operation == "terminate" else (pids, signalled_at)
        deadline = time.monotonic() + (self.ctx.remaining(timeout) or timeout)
        while pids and time.monotonic() < deadline:
            if not pg.fetch(conn, still, params)[0]["n"]:
                return
            self.ctx.sleep(0.02)

    @classmethod
    def summarize(cls, result: Any) -> str:
        key = "terminated" if "terminated" in result else "cancelled"
        return f"{key} {result[f'{key}_count']} backend(s) {result[key]}; skipped {result['skipped_count']}"


def _why_not(s: dict[str, Any] | None, flt: SessionFilter) -> str:
    if s is None:
        return "no such client session: gone, or not a client backend"
    if s["application_name"] == pg.APPLICATION_NAME:
        return "opsctl's own session"
    if s["superuser"] and not flt.include_superusers:
        return (f"superuser session of {s['user']}, {s['state'] or 'no state'}: never signalled "
                "automatically; end it by hand or set include_superusers")
    if s["backend_type"] != "client backend" and not flt.include_replication:
        return f"{s['backend_type']}: replication is never signalled unless include_replication is set"
    if flt.scope_miss(s):
        return f"{s['application_name'] or '?'}, excluded by {flt.scope_miss(s)}"
    return "does not match the step's other filters"


@register
class Terminate(_SignalBackends):
    """pg_terminate_backend on the sessions selected by filters (then waits up to 5 s for them to exit).
    Never opsctl's own sessions, superusers or replication backends unless asked; at most
    `max_targets`; each target is re-checked (same pid and backend_start) just before the signal.

    ```yaml
    - id: kill
      action: postgres.terminate
      with: {database: app, idle_in_transaction_seconds: 60, long_query_seconds: 300, max_targets: 20}
    ```
    """

    name = "postgres.terminate"
    # signalling a superuser's session needs a superuser: include_superusers is refused otherwise
    permissions = (Pg(roles=("pg_monitor",)), Pg(roles=("pg_signal_backend",), apply=True))
    summary = "pg_terminate_backend on sessions selected by filters (blast radius: max_targets)"
    function = "pg_terminate_backend"
    operation = "terminate"


@register
class Cancel(_SignalBackends):
    """pg_cancel_backend (cancel the running query, keep the session) on sessions selected by
    filters, with the same guards as postgres.terminate.

    ```yaml
    - id: cancel
      action: postgres.cancel
      with: {state: active, min_duration: 300, application_name: "report-*", max_targets: 5}
    ```
    """

    name = "postgres.cancel"
    permissions = (Pg(roles=("pg_monitor",)), Pg(roles=("pg_signal_backend",), apply=True))
    summary = "pg_cancel_backend on sessions selected by filters (blast radius: max_targets)"
    function = "pg_cancel_backend"
    operation = "cancel"
