"""The Kafka read-only guard against a real Kafka-protocol broker (noida-db): every read-only action
and plan() works through a read-only Cluster; from read-only code no admin mutation, no producer, no
group consumer and no offset commit is reachable; apply()'s Cluster is not wrapped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from opsctl.actions import load_all
from opsctl.actions.base import Action, ActionContext
from opsctl.backends.kafka import Cluster, make_consumer, make_producer
from opsctl.backends.readonly import ReadOnlyAdmin
from opsctl.config import Environment
from opsctl.errors import ReadOnlyViolation
from opsctl.records import Plan
from tests.fixtures.kafka import Broker, unique
from tests.guards.helpers import assert_covers, extra_actions, record, run_engine

pytestmark = pytest.mark.kafka

READ_ONLY: dict[str, dict[str, Any]] = {
    "kafka.brokers": {},
    "kafka.describe_topic": {"topic": "{topic}"},
    "kafka.dlq_depth": {"topic": "{dlq}"},
    "kafka.dlq_ratio": {"topic": "{topic}", "dlq_topic": "{dlq}"},
    "kafka.find_dlqs": {},
    "kafka.lag": {"group": "{group}", "topic": "{topic}"},
    "kafka.lag_trend": {"group": "{group}", "topic": "{topic}", "interval": 0.2},
    "kafka.peek": {"topic": "{dlq}", "limit": 3},
    "kafka.redrive_consumed": {"dlq_topic": "{dlq}", "topic": "{topic}", "window": 0},
    "kafka.redrive_status": {"dlq_topic": "{dlq}", "topic": "{topic}"},
}
PLANS: dict[str, dict[str, Any]] = {
    "kafka.redrive": {"dlq_topic": "{dlq}", "topic": "{topic}"},
    "kafka.reset_offsets": {"group": "{group}", "topic": "{topic}", "to": "latest"},
}


def test_the_tables_cover_every_registered_kafka_action() -> None:
    assert_covers(READ_ONLY, "kafka", read_only=True)
    assert_covers(PLANS, "kafka", read_only=False)


@pytest.fixture
def world(noida_broker: Broker) -> dict[str, str]:
    b = noida_broker
    topic, dlq, group = b.create_topic(unique("orders"), 2), b.create_topic(unique("dlq"), 1), unique("svc")
    b.produce(topic, 10)
    b.produce(dlq, 4)
    assert b.consume_with_group(topic, group, 4) == 4
    return {"topic": topic, "dlq": dlq, "group": group}


def _args(table: dict[str, Any], world: dict[str, str]) -> dict[str, Any]:
    return {k: v.format(**world) if isinstance(v, str) else v for k, v in table.items()}


def _ctx(broker: Broker, read_only: bool = True, clients: dict[str, Any] | None = None) -> ActionContext:
    env = Environment(name="t", backends={"kafka": {"bootstrap_servers": broker.bootstrap}})
    return ActionContext(environment=env, read_only=read_only, clients=clients)


def _state(broker: Broker, world: dict[str, str]) -> tuple[Any, ...]:
    return (broker.committed(world["group"], world["topic"]), len(broker.read_all(world["topic"])),
            len(broker.read_all(world["dlq"])))


@pytest.mark.parametrize("name", sorted(READ_ONLY))
def test_every_read_only_action_works_under_the_guard(name: str, world: dict[str, str],
                                                      noida_broker: Broker) -> None:
    before = _state(noida_broker, world)
    result = load_all()[name](_args(READ_ONLY[name], world), _ctx(noida_broker)).run()
    assert isinstance(result, dict) and result
    assert _state(noida_broker, world) == before


@pytest.mark.parametrize("name", sorted(PLANS))
def test_every_plan_works_under_the_guard(name: str, world: dict[str, str], noida_broker: Broker) -> None:
    before = _state(noida_broker, world)
    plan = load_all()[name](_args(PLANS[name], world), _ctx(noida_broker)).plan()
    assert isinstance(plan, Plan) and plan.changes
    assert _state(noida_broker, world) == before


def test_no_mutation_is_reachable_from_a_read_only_cluster(world: dict[str, str],
                                                           noida_broker: Broker) -> None:
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata

    before = _state(noida_broker, world)
    clients: dict[str, Any] = {}
    k = Cluster(_ctx(noida_broker, clients=clients))
    tp = TopicPartition(world["topic"], 0)
    for call, what in [
        (lambda: k.alter_offsets(world["group"], {tp: 0}, "reset"), "admin.alter_group_offsets"),
        (lambda: k.alter_offsets(world["group"], {tp: 0}, "commit", cancellable=False),
         "admin.alter_group_offsets"),
        (lambda: k.admin.delete_topics([world["dlq"]]), "admin.delete_topics"),
        (lambda: k.admin.create_topics([]), "admin.create_topics"),
        (lambda: k.admin.delete_records({tp: 5}), "admin.delete_records"),
        (lambda: k.admin.delete_consumer_groups([world["group"]]), "admin.delete_consumer_groups"),
        (lambda: k.admin._client, "admin._client"),
        (lambda: make_producer(k.conf), "a producer"),
        (lambda: make_consumer(k.conf, group_id=world["group"]), f"a consumer in group '{world['group']}'"),
        (lambda: make_producer(dict(k.conf)), "a producer"),  # a copy of the settings is still read-only
        (lambda: make_consumer({**k.conf}, group_id="other"), "a consumer in group 'other'"),
    ]:
        with pytest.raises(ReadOnlyViolation, match=f"read-only guard: kafka refused {what}"):
            call()
    consumer = make_consumer(dict(k.conf))
    try:
        with pytest.raises(ReadOnlyViolation, match="consumer.commit"):
            consumer.commit({tp: OffsetAndMetadata(0, "", -1)})
    finally:
        consumer.close()
    assert _state(noida_broker, world) == before
    # apply()'s Cluster in the same run shares the admin client, unwrapped
    writable = Cluster(_ctx(noida_broker, read_only=False, clients=clients))
    assert isinstance(k.admin, ReadOnlyAdmin) and not isinstance(writable.admin, ReadOnlyAdmin)
    assert k.admin._admin is writable.admin


class CommitFromRun(Action):
    name = "guardtest.kafka_reset"
    backend = "kafka"
    summary = "test"

    def run(self) -> Any:
        from kafka import TopicPartition

        settings = self.ctx.environment.settings
        k = Cluster(self.ctx)
        offsets = {TopicPartition(settings["topic"], 0): 0}
        k.alter_offsets(settings["group"], offsets, "reset")
        return {"reset": True}


def test_a_read_only_step_that_commits_offsets_fails(world: dict[str, str], noida_broker: Broker,
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    rb = tmp_path / "rb-980-kafka.yaml"
    rb.write_text("id: rb-980\ntitle: t\nseverity: P4\nsummary: t\ndiagnose:\n"
                  "  - id: bad\n    action: guardtest.kafka_reset\n")
    (tmp_path / "opsctl.yaml").write_text(json.dumps({"default_environment": "t", "environments": {"t": {
        "settings": {"group": world["group"], "topic": world["topic"]},
        "kafka": {"bootstrap_servers": noida_broker.bootstrap}}}}))
    monkeypatch.chdir(tmp_path)
    before = noida_broker.committed(world["group"], world["topic"])
    with extra_actions(CommitFromRun):
        outcome = run_engine(rb, monkeypatch, tmp_path / "state")
    bad = record(outcome, "bad")
    assert (outcome.exit_code, bad.status) == (1, "failed")
    assert "read-only guard: kafka refused admin.alter_group_offsets" in bad.reason
    assert noida_broker.committed(world["group"], world["topic"]) == before
