"""Fixture modules, one per backend; each starts its own private server on a free port.

Under pytest-xdist (`-n N --dist loadfile`, as scripts/test.sh runs it) a test module runs on one
worker (its tests share that worker's servers) while the modules spread over the workers;
session-scoped servers start once per worker that needs them (at most one kube-apiserver per
worker, about 450 MB).
"""

from __future__ import annotations

pytest_plugins = [
    "tests.fixtures.core",
    "tests.fixtures.postgres",
    "tests.fixtures.redis",
    "tests.fixtures.aws",
    "tests.fixtures.kafka",
    "tests.fixtures.k8s",
]
