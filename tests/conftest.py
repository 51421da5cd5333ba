"""Fixture modules, one per backend; each starts its own private server on a free port.

Under pytest-xdist (`-n N --dist loadgroup`, as scripts/test.sh runs it) a test module runs on one
worker; session-scoped servers start once per worker that needs them.
"""

from __future__ import annotations

import pytest

pytest_plugins = [
    "tests.fixtures.core",
    "tests.fixtures.postgres",
    "tests.fixtures.redis",
    "tests.fixtures.aws",
    "tests.fixtures.kafka",
    "tests.fixtures.k8s",
]

def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test module is a group: its tests share a worker (and the worker's servers), while
    the modules spread over the workers.  A worker starts a server the first time one of its
    modules needs it (at most one kube-apiserver per worker, about 450 MB)."""
    for item in items:
        item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
