"""Test-side time bounds that hold on a loaded machine.

A test that proves "a hung server costs one deadline, not one per attempt" must bound the time the run
took, but on a machine whose load is several times its core count every process runs that much slower.
``budget(seconds)`` stretches a bound written for an idle machine by the current load per core (never
below 1), so the bound stays tight where the machine is idle and still separates "one deadline" from
"a hang" where it is not.
"""

from __future__ import annotations

import os


def load_factor() -> float:
    try:
        per_core = os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        return 1.0
    return max(1.0, per_core)


def budget(seconds: float) -> float:
    return seconds * load_factor()
