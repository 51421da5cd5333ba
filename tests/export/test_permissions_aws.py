"""The generated IAM policy on moto with IAM enforced: an IAM user holding exactly the policy of
`opsctl permissions RUNBOOK --for aws -o json` runs rb-005, rb-007, rb-011 and rb-012; the same
policy without one action (rds:FailoverDBCluster, ecs:UpdateService, lambda:UpdateAlias) makes the
run exit 4 naming that action (no traceback, no verdict).

moto (server mode) checks every request against the caller's IAM policies once
INITIAL_NO_AUTH_ACTION_COUNT requests have been made; this module's own moto sets up without checks
(the count reset to infinity through /moto-api/reset-auth), then turns them on (count 0) for the
runs.  What moto does not do as AWS does is adapted in `for_moto`, and only that."""

from __future__ import annotations

import copy
import json
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.aws import (
    Moto,
    fast_windows,
    fill,
    make_aurora,
    make_ecs_service,
    make_queue_with_dlq,
    moto_process,
)
from tests.fixtures.core import REPO, Result
from tests.runbooks.test_rb012 import broken_worker, live

pytestmark = pytest.mark.aws


# AWS authorizes SQS batch calls with the single-message action; moto with the operation's name
MOTO_BATCH = {"sqs:SendMessage": "sqs:SendMessageBatch", "sqs:DeleteMessage": "sqs:DeleteMessageBatch",
              "sqs:ChangeMessageVisibility": "sqs:ChangeMessageVisibilityBatch"}


def for_moto(policy: dict[str, Any]) -> dict[str, Any]:
    """moto evaluates a statement's Resource against the request's resource, which it knows for SQS
    queues only (elsewhere, and for sqs:GetQueueUrl, it is "*", which no ARN pattern matches); it
    prefixes CloudWatch actions with the signing name, "monitoring", instead of "cloudwatch"; and it
    names SQS batch calls by their operation (MOTO_BATCH)."""
    out = copy.deepcopy(policy)
    for s in out["Statement"]:
        actions = s["Action"]
        if not all(a.startswith("sqs:") and a != "sqs:GetQueueUrl" for a in actions):
            s["Resource"] = "*"
        s["Action"] = [a.replace("cloudwatch:", "monitoring:") for a in actions]
        s["Action"] += [MOTO_BATCH[a] for a in actions if a in MOTO_BATCH]
    return out


def without(policy: dict[str, Any], action: str) -> dict[str, Any]:
    out = copy.deepcopy(policy)
    for s in out["Statement"]:
        s["Action"] = [a for a in s["Action"] if a != action]
    out["Statement"] = [s for s in out["Statement"] if s["Action"]]
    assert out != policy, f"{action} is not in the policy"
    return out


class IamMoto:
    def __init__(self, moto: Moto) -> None:
        self.moto = moto

    def checks(self, on: bool) -> None:
        # not form-encoded (urllib's default): moto reads the raw body
        req = urllib.request.Request(f"{self.moto.endpoint}/moto-api/reset-auth", method="POST",
                                     data=b"0" if on else b"inf", headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(req, timeout=10).read()

    def user(self, name: str, policy: dict[str, Any]) -> dict[str, str]:
        """An IAM user with ``policy`` inline (made while checks are off); its opsctl environment."""
        iam = self.moto.client("iam")
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="opsctl", PolicyDocument=json.dumps(for_moto(policy)))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return {**self.moto.env, "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


@pytest.fixture(scope="module")
def iam_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IamMoto]:
    env = {"INITIAL_NO_AUTH_ACTION_COUNT": "inf", "OPSCTL_MOTO_LAMBDA_SIGNATURE": "unchecked"}
    with moto_process(tmp_path_factory.mktemp("moto-iam-perms"), env) as m:
        yield IamMoto(m)


@pytest.fixture
def aws(iam_moto: IamMoto, tmp_path: Path) -> Iterator[IamMoto]:
    iam_moto.checks(False)
    iam_moto.moto.reset()
    yield iam_moto
    iam_moto.checks(False)


def policy_of(runbook: str, *args: str) -> dict[str, Any]:
    """What `opsctl permissions RUNBOOK ARGS --for aws -o json` prints (the same functions, called
    here: the CLI's output forms are tested in tests/engine/test_permissions.py)."""
    from opsctl import catalog
    from opsctl.export import permissions as P

    rb = catalog.load(runbook)
    flags = dict(zip(args[::2], args[1::2], strict=True))
    params = dict(v.split("=", 1) for k, v in zip(args[::2], args[1::2], strict=True) if k == "-p")
    perms = P.collect(rb, option=flags.get("--option"),
                      params={k: rb.params[k].coerce(v) for k, v in params.items()})
    return P.iam_policy(perms)


def fast(runbook_id: str, tmp_path: Path) -> str:
    """The shipped runbook with 1 s between convergence attempts (tests/fixtures/aws.fast_windows)."""
    return fast_windows(str(next((REPO / "runbooks").glob(f"{runbook_id}-*.yaml"))), tmp_path)


def steps(result: Result) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in json.loads(result.stdout)["steps"]}


def assert_denied(result: Result, action: str) -> None:
    assert result.code == 4, result.output
    assert "access denied" in result.output and action in result.output, result.output
    assert "Traceback" not in result.output and "verified" not in result.stdout


def test_rb005_failover_with_the_generated_policy_and_without_the_failover_action(
        opsctl: Callable[..., Result], aws: IamMoto, tmp_path: Path) -> None:
    ids = make_aurora(aws.moto, "plooral-aurora", members=2)
    params = ("-p", "cluster=plooral-aurora", "-p", f"target_instance={ids[1]}")
    policy = policy_of("rb-005", *params)
    args = (fast("rb-005", tmp_path), *params)
    assert {"Effect": "Allow", "Action": ["rds:FailoverDBCluster"], "Sid": "Rds2",
            "Resource": "arn:aws:rds:*:*:cluster:plooral-aurora"} in policy["Statement"]
    denied = aws.user("no-failover", without(policy, "rds:FailoverDBCluster"))
    allowed = aws.user("rb-005", policy)
    aws.checks(True)
    result = opsctl("run", *args, "--yes", "-o", "json", env=denied)
    assert_denied(result, "rds:FailoverDBCluster")
    assert steps(result)["status"]["status"] == "ok"  # the diagnosis had what it needed
    result = opsctl("run", *args, "--yes", "-o", "json", env=allowed)
    assert result.code == 0, result.output
    assert steps(result)["failover"]["result"]["writer"] == ids[1]


def test_rb007_redrive_with_the_generated_policy(opsctl: Callable[..., Result], aws: IamMoto) -> None:
    queue, dlq = make_queue_with_dlq(aws.moto, "plooral-queue")
    fill(aws.moto, dlq, 30)
    args = ("rb-007", "-p", "queue=plooral-queue")
    allowed = aws.user("rb-007", policy_of(*args))
    aws.checks(True)
    result = opsctl("run", *args, "--yes", "-o", "json", env=allowed)
    assert result.code == 0, result.output
    got = steps(result)["redrive"]["result"]
    assert (got["planned"], got["moved"], got["duplicates"]) == (30, 30, 0)
    assert steps(result)["drained"]["status"] == "ok"


def test_rb011_scale_with_the_generated_policy(opsctl: Callable[..., Result], aws: IamMoto,
                                               tmp_path: Path) -> None:
    make_ecs_service(aws.moto, "plooral-cluster", "plooral-api", desired=3)
    params = ("-p", "cluster=plooral-cluster", "-p", "service=plooral-api", "--option", "scale")
    policy = policy_of("rb-011", *params)
    denied = aws.user("no-update", without(policy, "ecs:UpdateService"))
    allowed = aws.user("rb-011", policy)
    aws.checks(True)
    args = (fast("rb-011", tmp_path), *params, "-p", "desired=4", "--yes", "-o", "json")
    assert_denied(opsctl("run", *args, env=denied), "ecs:UpdateService")
    result = opsctl("run", *args, env=allowed)
    assert result.code == 0, result.output
    assert steps(result)["steady"]["status"] == "ok"


def test_rb012_alias_rollback_with_the_generated_policy(opsctl: Callable[..., Result], aws: IamMoto,
                                                        tmp_path: Path) -> None:
    broken_worker(aws.moto)
    aws.moto.client("cloudwatch").set_alarm_state(AlarmName="PlooralWorkerFailure", StateValue="OK",
                                                  StateReason="fixed by the rollback below")
    params = ("-p", "function=plooral-worker", "-p", "queue=plooral-queue", "--option", "rollback-alias")
    policy = policy_of("rb-012", *params)
    args = (fast("rb-012", tmp_path), *params)
    denied = aws.user("no-alias-update", without(policy, "lambda:UpdateAlias"))
    allowed = aws.user("rb-012", policy)
    aws.checks(True)
    assert_denied(opsctl("run", *args, "--yes", "-o", "json", env=denied), "lambda:UpdateAlias")
    result = opsctl("run", *args, "--yes", "-o", "json", env=allowed)
    assert result.code == 0, result.output
    assert steps(result)["alias_now"]["status"] == "ok"
    aws.checks(False)
    assert live(aws.moto) == "2"
