"""rb-009: a redriven record that fails again comes back to the DLQ carrying the headers it had,
its x-opsctl-redriven origin included (a DLQ handler copies the headers); redriven again, it
carries two origins, and only the last (the one this redrive added) says where it comes from.
Counting every origin header invented a duplicate of the earlier record: exit 1 "1 duplicate(s)"
after a redrive that moved each record exactly once (issue 9, defect 3: exact counts)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.fixtures.core import REPO, Result
from tests.fixtures.kafka import Broker, unique

pytestmark = pytest.mark.kafka
RUNBOOK = str(REPO / "runbooks" / "rb-009-kafka-dlq-redrive.yaml")
HEADER = "x-opsctl-redriven"


def _step(result: Result, step_id: str) -> dict[str, Any]:
    return next(s for s in json.loads(result.stdout)["steps"] if s["id"] == step_id)


def test_a_record_that_failed_again_is_not_counted_as_a_duplicate(opsctl: Callable[..., Result],
                                                                 noida_broker: Broker) -> None:
    source = noida_broker.create_topic(unique("inv"), 2)
    dlq = noida_broker.create_topic(f"{source}.dlq", 1)
    noida_broker.produce(dlq, 4, partition=0, headers=[("error", b"boom")])  # offsets 0..3
    group = unique("redrive")
    args = ("run", RUNBOOK, "-o", "json", "--yes", "-p", f"dlq_topic={dlq}", "-p", f"topic={source}",
            "-p", f"group={group}")
    first = opsctl(*args, "-p", "max_messages=2", "-p", "allow_partial=true", env=noida_broker.env)
    assert first.code == 1 and _step(first, "redrive")["result"]["redriven"] == 2, first.output
    # a run killed after it sent offset 2 (not committed): the next plan keeps this campaign
    noida_broker.produce(source, 1, headers=[(HEADER, f"{dlq}/0/2".encode())])
    # the consumer failed on redriven record 1 again: back in the DLQ (offset 4) with its headers
    noida_broker.produce(dlq, 1, partition=0, headers=[("error", b"again"), (HEADER, f"{dlq}/0/1".encode())])
    second = opsctl(*args, env=noida_broker.env)
    redrive = _step(second, "redrive")["result"]
    assert (redrive["redriven"], redrive["already_there"]) == (2, 1), redrive
    exact = _step(second, "exact")["result"]
    assert (exact["duplicates"], exact["missing"], exact["remaining"]) == (0, 0, 0), exact
    assert exact["moved"] == exact["expected"] == 5
    assert second.code == 0, second.output
    assert json.loads(second.stdout)["message"] == "verified"
