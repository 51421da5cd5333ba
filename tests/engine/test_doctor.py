"""`opsctl doctor` against real servers: private PostgreSQL and Redis, a Kafka-protocol broker, moto
in server mode; faults: a dead port, a server that accepts and never answers, an ordinary PostgreSQL
role, a Redis ACL user without CLIENT, bad credentials."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from opsctl.testing.postgres import PASSWORDS, PgServer
from opsctl.testing.redis import RedisServer
from tests.fixtures.aws import Moto
from tests.fixtures.breaker_app import Prometheus
from tests.fixtures.core import Result, SilentServer, free_port
from tests.fixtures.kafka import Broker
from tests.timing import budget


@pytest.fixture
def standard_env(tmp_path: Path, pg_server: PgServer, redis_server: RedisServer, noida_broker: Broker,
                 moto_server: Moto, prometheus: Prometheus) -> dict[str, str]:
    """The default environment of the standard variables, every backend but Kubernetes (no
    kubeconfig in the private HOME)."""
    # moto imports a service's backend on its first request (seconds): not what doctor measures
    moto_server.client("rds").describe_db_clusters()
    moto_server.client("ecs").list_clusters()
    moto_server.client("lambda").list_functions()
    moto_server.client("cloudwatch").describe_alarms()
    return {**pg_server.env("ops"), "REDIS_URL": redis_server.url, **noida_broker.env,
            **{k: v for k, v in moto_server.env.items() if v}, "HOME": str(tmp_path / "home"),
            "PROMETHEUS_URL": prometheus.url,
            "KUBECONFIG": ""}


def _slack() -> tuple[str, str]:
    """doctor's default deadline (5 s), stretched by the load of this shared machine."""
    return "--timeout", str(round(budget(5.0), 1))


def _doc(result: Result) -> dict[str, Any]:
    assert result.stdout.lstrip().startswith("{"), result.output
    return json.loads(result.stdout)


def _rows(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["backend"]: r for r in doc["backends"]}


def test_all_up(opsctl: Callable[..., Result], standard_env: dict[str, str]) -> None:
    result = opsctl("doctor", *_slack(), "-o", "json", env=standard_env)
    assert result.code == 0, result.output
    doc = _doc(result)
    rows = _rows(doc)
    assert {b: r["status"] for b, r in rows.items()} == {
        "postgres": "ok", "redis": "ok", "kafka": "ok", "aws": "ok", "kubernetes": "not_configured",
        "prometheus": "ok"}
    assert rows["postgres"]["version"].startswith("PostgreSQL 1") and rows["postgres"]["identity"] == "ops"
    assert rows["redis"]["version"].startswith("Redis ")
    assert rows["kafka"]["version"].startswith("Kafka API ~")
    assert rows["aws"]["identity"].startswith("arn:aws:")
    assert rows["prometheus"]["version"].startswith("Prometheus ")
    assert "rb-006" in rows["postgres"]["runbooks"] and "rb-010" in rows["redis"]["runbooks"]
    assert doc["duration"] < budget(2.0), doc["duration"]  # well under 2 s when everything answers


def test_one_dead_one_hung_cost_one_deadline(opsctl: Callable[..., Result], standard_env: dict[str, str],
                                             silent_server: SilentServer) -> None:
    env = {**standard_env, "PGPORT": str(free_port()),  # nothing listens there: a dead server
           "REDIS_URL": f"redis://127.0.0.1:{silent_server.port}/0",  # accepts, never answers
           "PROMETHEUS_URL": f"http://127.0.0.1:{silent_server.port}"}
    deadline = round(budget(3.0), 1)  # what the answering backends need on this (loaded) machine
    t0 = time.monotonic()
    result = opsctl("doctor", "--timeout", str(deadline), "-o", "json", env=env)
    took = time.monotonic() - t0
    assert result.code == 4, result.output
    rows = _rows(_doc(result))
    assert rows["postgres"]["status"] == "unreachable" and "refused" in rows["postgres"]["detail"]
    assert rows["redis"]["status"] in ("unreachable", "timed_out") and rows["redis"]["detail"]
    assert rows["prometheus"]["status"] in ("unreachable", "timed_out")
    assert rows["kafka"]["status"] == "ok" and rows["aws"]["status"] == "ok"  # the others still checked
    assert _doc(result)["duration"] < deadline + budget(0.5), result.output  # one deadline, not one per probe
    assert took < deadline + budget(6), took  # with the interpreter's start-up


def test_ordinary_role_and_acl_user_are_permission_gaps(
        opsctl: Callable[..., Result], standard_env: dict[str, str], redis_server: RedisServer) -> None:
    client = redis_server.client()
    client.acl_setuser("doctor-limited", enabled=True, passwords=["+limited-s3cret-pw"], keys=["*"],
                       commands=["+@read", "+info", "+ping", "+hello", "+auth", "+client|setname"])
    try:
        env = {**standard_env, **{k: v for k, v in {"PGUSER": "nostats",
                                                     "PGPASSWORD": PASSWORDS["nostats"]}.items()},
               "REDIS_URL": f"redis://doctor-limited:limited-s3cret-pw@127.0.0.1:{redis_server.port}/0"}
        result = opsctl("doctor", *_slack(), "-o", "json", env=env)
    finally:
        client.acl_deluser("doctor-limited")
    assert result.code == 1, result.output  # a diagnosis would be refused: not a crash, not exit 4
    rows = _rows(_doc(result))
    assert rows["postgres"]["status"] == "permission_gap" and rows["postgres"]["identity"] == "nostats"
    assert any("pg_monitor" in m for m in rows["postgres"]["missing"]), rows["postgres"]
    assert rows["redis"]["status"] == "permission_gap" and rows["redis"]["identity"] == "doctor-limited"
    assert {m.split(":")[0] for m in rows["redis"]["missing"]} == {"CLIENT LIST", "SLOWLOG GET"}
    assert "limited-s3cret-pw" not in result.output and PASSWORDS["nostats"] not in result.output


def test_bad_credentials_denied_without_leaking(opsctl: Callable[..., Result], standard_env: dict[str, str],
                                                redis_server: RedisServer, pg_server: PgServer,
                                                tmp_path: Path) -> None:
    wrong = "wr0ng-pa55word-value"
    (tmp_path / "opsctl.yaml").write_text(
        "environments:\n  prod:\n"
        f"    postgres: {{dsn: \"postgresql://ops:{wrong}@127.0.0.1:{pg_server.port}/app\"}}\n"
        f"    redis: {{url: \"redis://:{wrong}@127.0.0.1:{redis_server.port}/0\"}}\n")
    env = {k: v for k, v in standard_env.items() if not k.startswith("PG") and k != "REDIS_URL"}
    text = opsctl("doctor", *_slack(), "--env", "prod", env=env)
    assert text.code == 4 and "denied" in text.stdout and "environment prod" in text.stdout, text.output
    result = opsctl("doctor", *_slack(), "--env", "prod", "-o", "json", env=env)
    assert result.code == 4, result.output
    for out in (text, result):
        assert wrong not in out.output and PASSWORDS["ops"] not in out.output
        assert "Traceback" not in out.output
    rows = _rows(_doc(result))
    assert rows["postgres"]["status"] == "denied" and "password authentication failed" in \
        rows["postgres"]["detail"]
    assert rows["redis"]["status"] == "denied"
    assert rows["kafka"]["status"] == "ok"  # no kafka section: its standard variable still counts
