"""One apply at a time per target (the engine side; the locks themselves are in
``opsctl.backends.locking``).

After a mutating step is confirmed, ``ApplyGate.hold`` takes the lock of its target (PostgreSQL
advisory lock keyed by runbook + database, Redis lock with a TTL, Kubernetes Lease in the target
namespace, a local lock file for every other backend), waiting up to ``wait`` seconds while telling
who holds it (user, host, run id, since when), then re-plans: a second run sees the first one's
effect.  Targets that are gone are dropped (nothing left: the step is a no-op); targets that were
not confirmed are refused (exit 3); with a plan file the live plan must match the file exactly.
``max_applies_per_hour`` is checked before a run and again under the lock (``check_rate``): two
runs that both passed the first check cannot both apply past the limit.
"""

from __future__ import annotations

import getpass
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from opsctl.errors import ActionError, BackendError, LockBusy, NotConfirmed, PlanDrift
from opsctl.records import Plan, now_iso

DEFAULT_WAIT = 30.0
POLL = 0.25


def lock_dir() -> Path:
    """The state directory's locks/, or (read-only state directory, --no-log) a per-user one in
    the temporary directory: the lock must still work."""
    from opsctl.audit import state_subdirs, writable_state_subdir

    try:
        return writable_state_subdir("locks")
    except OSError:
        return state_subdirs("locks")[-1]  # FileLock names the error when it cannot be taken


def check_rate(runbook_id: str, environment: Any, run_id: str = "", step: str = "") -> None:
    """``max_applies_per_hour`` (opsctl.yaml, per environment, optionally per runbook), from the run
    log: NotConfirmed (exit 3) once reached.  Before a run (``step`` empty), and under the apply lock
    of each mutating step of run ``run_id``, which does not count itself."""
    from opsctl import audit

    limit = environment.max_applies(runbook_id) if hasattr(environment, "max_applies") else None
    if limit is None:
        return
    recent = audit.recent_applies(runbook_id, environment.name, 3600.0, exclude=run_id)
    if len(recent) >= limit:
        outcome = (f"step {step!r} changed nothing (checked again under the apply lock: another run "
                   "applied meanwhile)" if step else "nothing was run")
        raise NotConfirmed(f"rate limit: {runbook_id} applied changes {len(recent)} time(s) in environment "
                           f"{environment.name!r} in the last hour (runs {', '.join(recent[-3:])}); "
                           f"max_applies_per_hour is {limit}: {outcome}. Look at why the mitigation "
                           "does not hold before applying it again")


class ApplyGate:
    def __init__(self, runbook_id: str, run_id: str, environment: Any, renderer: Any, audit: Any,
                 replay: Any = None, wait: float = DEFAULT_WAIT) -> None:
        from opsctl.backends.locking import Holder

        self.runbook_id, self.run_id, self.environment = runbook_id, run_id, environment
        self.renderer, self.audit, self.replay, self.wait = renderer, audit, replay, wait
        self.holder = Holder(getpass.getuser(), socket.gethostname(), run_id, now_iso(), os.getpid())

    # ---- which lock ----------------------------------------------------------------------------
    def lock_for(self, backend: str, args: dict[str, Any], ttl: float) -> Any:
        from opsctl.backends import locking

        env = self.environment
        try:
            if backend == "postgres":
                from opsctl.backends import postgres as pg

                settings = pg.settings_from(env.backend("postgres"), args.get("database") or None)
                database = settings.describe().rpartition("/")[2] or settings.describe()
                return locking.PgAdvisoryLock(settings, f"opsctl:{self.runbook_id}:{database}", self.holder)
            if backend == "redis":
                from opsctl.backends import redis as rb

                return locking.RedisLock(rb.settings_from(env.backend("redis")),
                                         f"opsctl:lock:{self.runbook_id}", self.holder, ttl)
            if backend == "kubernetes":
                namespace = str(args.get("namespace") or env.settings.get("namespace") or "default")
                return locking.LeaseLock(env.backend("kubernetes"), namespace, f"opsctl-{self.runbook_id}",
                                         self.holder, ttl)
        except BackendError as e:
            self.renderer.note(f"apply lock: {e}; serialising on this host only (lock file)")
        where = f"{backend}:{env.name}"
        return locking.FileLock(lock_dir(), f"opsctl:{self.runbook_id}:{where}", self.holder)

    # ---- the gate ------------------------------------------------------------------------------
    @contextmanager
    def hold(self, step: Any, cls: Any, args: dict[str, Any], confirmed: Plan,
             ctx: Any) -> Iterator[Plan | None]:
        ttl = ctx.remaining(1800.0) or 1800.0
        lock = self.lock_for(cls.backend, args, ttl + 30)
        self._acquire(lock, step, ctx)
        try:
            self.audit.event("lock", step=step.id, lock=lock.describe(), held=True)
            check_rate(self.runbook_id, self.environment, self.run_id, step.id)
            fresh = cls(args, ctx.as_read_only()).plan()  # plan() is read-only code: guarded
            if self.replay is not None:
                final: Plan | None = self.replay.check(step.id, fresh)
                self.replay.claim(self.run_id)
            else:
                final = self._still_to_do(step, confirmed, fresh)
            yield final
        finally:
            lock.release()
            self.audit.event("lock", step=step.id, lock=lock.describe(), held=False)

    def _acquire(self, lock: Any, step: Any, ctx: Any) -> None:
        from opsctl.backends.locking import FileLock

        deadline = time.monotonic() + min(self.wait, ctx.remaining(self.wait) or self.wait)
        told = None
        while True:
            try:
                holder = lock.try_acquire()
            except (BackendError, ActionError) as e:
                if isinstance(lock, FileLock):
                    raise
                # the backend cannot hold a lock right now (a Redis out of memory, a PostgreSQL
                # without a free slot: often the incident itself): do not make it worse
                self.renderer.note(f"apply lock: {e}; serialising on this host only (lock file)")
                self.audit.event("lock_fallback", step=step.id, lock=lock.describe(), reason=str(e))
                lock = self._fallback(lock)
                continue
            if holder is None:
                if told is not None:
                    self.renderer.note(f"{step.id}: got the {lock.kind} (the other run ended)")
                return
            if str(holder) != told:
                told = str(holder)
                self.renderer.note(f"{step.id}: waiting for the {lock.describe()}: held by {holder}")
                self.audit.event("lock_wait", step=step.id, lock=lock.describe(), holder=str(holder))
            if time.monotonic() >= deadline:
                lock.release()
                raise LockBusy(f"another apply holds the {lock.describe()}: {holder}; waited "
                               f"{self.wait:g}s, nothing was changed (re-run when it has finished)")
            ctx.sleep(POLL)

    def _fallback(self, lock: Any) -> Any:
        from opsctl.backends.locking import FileLock

        lock.release()
        return FileLock(lock_dir(), lock.name, self.holder)

    def _still_to_do(self, step: Any, confirmed: Plan, fresh: Plan) -> Plan | None:
        """A normal run: apply what is still to do of what was confirmed, never more."""
        ok = {(c.target, c.operation) for c in confirmed.changes}
        new = [c for c in fresh.changes if (c.target, c.operation) not in ok]
        if new:
            names = ", ".join(c.target for c in new[:5])
            raise PlanDrift(f"since the plan was confirmed, step {step.id!r} would also change "
                            f"{len(new)} thing(s) nobody confirmed ({names}): nothing was changed; "
                            "re-run to see the new plan")
        gone = len(confirmed.changes) - len(fresh.changes)
        if gone:
            self.renderer.note(f"{step.id}: {gone} of the {len(confirmed.changes)} planned change(s) "
                               "are no longer needed (another run made them meanwhile)")
        return None if fresh.empty else fresh
