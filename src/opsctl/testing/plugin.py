"""The pytest plugin of the rehearsal kit, registered by the ``pytest11`` entry point ``opsctl``
(``pip install 'opsctl-runbooks[testing]'``; disable with ``-p no:opsctl``).

Session fixtures, each a real server on a free port, started on first use and stopped at the end;
a server that cannot run here (binary or package missing) skips the test with the reason:

* ``opsctl_postgres``: PostgreSQL (``PgServer``: roles ``postgres``, ``ops``, ``app``, ``monitor``,
  ``nostats``; databases ``app`` and ``other``; ``env()`` for libpq variables);
* ``opsctl_redis``: redis-server (``RedisServer``: ``url``, ``client()``), maxmemory 4mb;
* ``opsctl_kafka``: a Kafka-protocol broker (noida-db, else Tansu; ``Broker.env``);
  ``opsctl_kafka_brokers`` starts either kind (``.get("noida" | "tansu")``);
* ``opsctl_moto``: moto in server mode (``Moto.env`` for an opsctl subprocess, ``client(service)``).

``opsctl_rehearse(path)`` runs a rehearsal file (``*.rehearsal.yaml``) against these servers and
returns its results; ``pytest runbooks/`` also collects rehearsal files as tests.  The fault
injectors are methods of the servers (``leak_connections``, ``lock_chain``, ``long_queries``,
``fill_to_maxmemory``, ``build_lag``, ``fill_dlq``) and functions of ``opsctl.testing.aws``
(``make_queue_with_dlq`` + ``fill``) and ``opsctl.testing.breaker`` (``BreakerApp.open_breaker``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from opsctl.testing.unavailable import Unavailable


def _start(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Unavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def opsctl_postgres() -> Iterator[Any]:
    from opsctl.testing.postgres import start_postgres

    server = _start(lambda: start_postgres(max_connections=20))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def opsctl_redis() -> Iterator[Any]:
    from opsctl.testing.redis import start_redis

    server = _start(lambda: start_redis(maxmemory="4mb", policy="noeviction"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def opsctl_kafka_brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from opsctl.testing.kafka import BrokerPool

    pool = BrokerPool(tmp_path_factory.mktemp("opsctl-kafka"))
    yield pool
    pool.stop_all()


@pytest.fixture(scope="session")
def opsctl_kafka(opsctl_kafka_brokers: Any) -> Any:
    reasons = []
    for kind in ("noida", "tansu"):
        try:
            return opsctl_kafka_brokers.get(kind)
        except Unavailable as e:
            reasons.append(str(e))
    pytest.skip("; ".join(reasons))


@pytest.fixture(scope="session")
def opsctl_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from opsctl.testing.aws import moto_process

    try:
        ctx = moto_process(tmp_path_factory.mktemp("opsctl-moto"))
        server = ctx.__enter__()
    except Unavailable as e:
        pytest.skip(str(e))
    try:
        yield server
    finally:
        ctx.__exit__(None, None, None)


class _SessionServers:
    """The rehearsal runner's servers, taken from the session fixtures on demand."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.request = request

    def get(self, kind: str) -> Any:
        name = {"postgres": "opsctl_postgres", "redis": "opsctl_redis", "kafka": "opsctl_kafka",
                "aws": "opsctl_moto"}[kind]
        return self.request.getfixturevalue(name)


@pytest.fixture
def opsctl_rehearse(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``opsctl_rehearse(path)`` -> the list of RehearsalResult of one rehearsal file, run against the
    session's servers (a missing server skips)."""
    from opsctl.testing.rehearse import run_file

    def rehearse(path: str | Path, **kw: Any) -> Any:
        return run_file(Path(path), _SessionServers(request), **kw)

    return rehearse
