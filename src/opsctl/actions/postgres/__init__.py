"""PostgreSQL actions: pool usage, sessions, lock chains, statements, sizes, replication (read-only);
cancel / terminate backends and per-role settings (mutating, with live plans).

Targeting rules shared by every mutating action: opsctl's own sessions (application_name ``opsctl``),
superusers and non-client backends (walsenders, autovacuum...) are never selected unless the step
asks for them explicitly, and ``max_targets`` bounds how many backends a step may touch.
"""

from opsctl.actions.postgres import (  # noqa: F401 - registers
    locks,
    plans,
    query,
    sessions,
    settings,
    stats,
    terminate,
)
