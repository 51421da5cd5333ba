"""Fixture modules, one per backend; each starts its own private server on a free port.

Under pytest-xdist (`-n N --dist loadfile`, as scripts/test.sh runs it) a test module runs on one
worker (its tests share that worker's servers) while the modules spread over the workers;
session-scoped servers start once per worker that needs them, except the Kubernetes control plane:
one per run (about 450 MB), shared by the workers (tests/fixtures/k8s.py).
"""

from __future__ import annotations

import importlib.metadata

# The servers come from the shipped rehearsal kit (opsctl.testing.plugin), registered by the
# `pytest11` entry point of the installed package; an install that predates the entry point (an old
# .venv) still gets it from here.
_REGISTERED = {e.value for e in importlib.metadata.entry_points(group="pytest11")}
_KIT = [] if "opsctl.testing.plugin" in _REGISTERED else ["opsctl.testing.plugin"]

pytest_plugins = [
    *_KIT,
    "tests.fixtures.core",
    "tests.fixtures.postgres",
    "tests.fixtures.redis",
    "tests.fixtures.aws",
    "tests.fixtures.kafka",
    "tests.fixtures.k8s",
]
