"""rb-007 (SQS DLQ redrive) rehearsed through the real CLI against moto in server mode."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.fixtures.aws import Moto, depth, drain_bodies, fill, make_queue_with_dlq
from tests.fixtures.core import REPO, Result

pytestmark = pytest.mark.aws
RUNBOOK = str(REPO / "runbooks" / "rb-007-sqs-dlq-redrive.yaml")


def step(result: Result, step_id: str) -> dict[str, Any]:
    return next(s for s in json.loads(result.stdout)["steps"] if s["id"] == step_id)


def test_dry_run_finds_the_dlq_and_moves_nothing(opsctl: Callable[..., Result], moto: Moto) -> None:
    queue, dlq = make_queue_with_dlq(moto, "plooral-queue")
    fill(moto, dlq, 120)
    result = opsctl("run", RUNBOOK, "--dry-run", "-o", "json", "-p", "queue=plooral-queue", env=moto.env)
    assert result.code == 0, result.output
    depth_step = step(result, "depth")
    assert depth_step["result"]["dlq_visible"] == 120
    assert any("120 message(s) in plooral-queue-dlq" in f["message"] for f in depth_step["findings"])
    assert step(result, "samples")["result"]["count"] == 5
    assert step(result, "consumer")["result"]["total"] == 0
    assert step(result, "redrive")["status"] == "planned"
    assert (depth(moto, queue), depth(moto, dlq)) == (0, 120)  # the server's view: nothing moved
    attrs = moto.client("sqs").get_queue_attributes(QueueUrl=dlq, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_yes_moves_everything_and_verify_passes(opsctl: Callable[..., Result], moto: Moto) -> None:
    queue, dlq = make_queue_with_dlq(moto, "plooral-queue")
    sent = fill(moto, dlq, 300)
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", "-p", "queue=plooral-queue", env=moto.env)
    assert result.code == 0, result.output
    assert step(result, "redrive")["result"]["moved"] == 300
    assert step(result, "drained")["status"] == "ok"
    assert depth(moto, dlq) == 0
    assert sorted(drain_bodies(moto, queue)) == sent


def test_over_max_messages_is_refused_before_any_change(opsctl: Callable[..., Result], moto: Moto) -> None:
    queue, dlq = make_queue_with_dlq(moto, "plooral-queue")
    fill(moto, dlq, 30)
    result = opsctl("run", RUNBOOK, "--yes", "-p", "queue=plooral-queue", "-p", "max_messages=20",
                    env=moto.env)
    assert result.code == 1, result.output
    assert "more than max_messages=20" in result.output
    assert (depth(moto, queue), depth(moto, dlq)) == (0, 30)


def test_no_terminal_without_yes_refuses(opsctl: Callable[..., Result], moto: Moto) -> None:
    queue, dlq = make_queue_with_dlq(moto, "plooral-queue")
    fill(moto, dlq, 40)
    result = opsctl("run", RUNBOOK, "-p", "queue=plooral-queue", env=moto.env)
    assert result.code == 3, result.output
    assert (depth(moto, queue), depth(moto, dlq)) == (0, 40)


def test_declined_at_the_prompt_changes_nothing(opsctl_tty: Callable[..., Result], moto: Moto) -> None:
    queue, dlq = make_queue_with_dlq(moto, "plooral-queue")
    fill(moto, dlq, 25)
    result = opsctl_tty("run", RUNBOOK, "-p", "queue=plooral-queue", answer="n\n", env=moto.env)
    assert result.code == 3, result.output
    assert (depth(moto, queue), depth(moto, dlq)) == (0, 25)


def test_invalid_credentials_exit_4(opsctl: Callable[..., Result], moto_iam: Moto) -> None:
    result = opsctl("run", RUNBOOK, "--dry-run", "-p", "queue=plooral-queue", env=moto_iam.env,
                    timeout=120)
    assert result.code == 4, result.output
    assert "access denied (InvalidClientTokenId): The security token included in the request is " \
           "invalid" in result.output
    assert "<?xml" not in result.output and "Traceback" not in result.output


def test_unreachable_endpoint_exits_4_without_traceback(opsctl: Callable[..., Result],
                                                        moto: Moto) -> None:
    from tests.fixtures.core import free_port

    env = {**moto.env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    result = opsctl("run", RUNBOOK, "--dry-run", "-p", "queue=plooral-queue", env=env, timeout=120)
    assert result.code == 4, result.output
    assert "cannot reach the AWS endpoint" in result.output
    assert "Traceback" not in result.output


def test_missing_credentials_exit_4(opsctl: Callable[..., Result], moto: Moto) -> None:
    env = {**moto.env, "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    result = opsctl("run", RUNBOOK, "--dry-run", "-p", "queue=plooral-queue", env=env, timeout=120)
    assert result.code == 4, result.output
    assert "no AWS credentials found" in result.output
    assert "Traceback" not in result.output


def test_killed_mid_redrive_then_rerun_loses_nothing(opsctl_env: dict[str, str], moto: Moto,
                                                     opsctl: Callable[..., Result]) -> None:
    queue, dlq = make_queue_with_dlq(moto, "plooral-queue")
    sent = fill(moto, dlq, 1000)
    env = {**opsctl_env, **moto.env}
    args = [sys.executable, "-m", "opsctl", "run", RUNBOOK, "--yes", "-p", "queue=plooral-queue",
            "-p", "rate=400", "-p", "visibility_timeout=3"]
    proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while depth(moto, queue) < 100 and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # a crash: no clean-up code runs
    proc.wait()
    moved = depth(moto, queue)
    assert 0 < moved < 1000
    time.sleep(3.2)  # visibility timeout of the messages the dead run had received
    assert moved + depth(moto, dlq) >= 1000
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", "-p", "queue=plooral-queue", env=moto.env)
    assert result.code == 0, result.output
    bodies = drain_bodies(moto, queue)
    assert set(bodies) == set(sent)  # none lost; a crash between send and delete may duplicate
    assert len(bodies) - len(sent) <= 40  # at most the batches that were in flight (4 workers x 10)


def test_ctrl_c_mid_redrive_records_what_was_moved(opsctl_env: dict[str, str], moto: Moto,
                                                  opsctl: Callable[..., Result]) -> None:
    # the post-mortem must say how many messages had moved when the on-call engineer stopped it
    queue, dlq = make_queue_with_dlq(moto, "plooral-queue")
    fill(moto, dlq, 1000)
    env = {**opsctl_env, **moto.env}
    args = [sys.executable, "-m", "opsctl", "run", RUNBOOK, "--yes", "-o", "json", "-p",
            "queue=plooral-queue", "-p", "rate=200", "-p", "visibility_timeout=3"]
    proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 60
        while depth(moto, queue) < 100 and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out + err
    moved = depth(moto, queue)
    assert 0 < moved < 1000
    redrive = next(s for s in json.loads(out)["steps"] if s["id"] == "redrive")
    assert redrive["status"] == "interrupted"
    assert redrive["result"]["moved"] == moved and redrive["result"]["stopped"] == "interrupted"
    assert f"{moved} message(s) moved" in redrive["reason"]
    run_id = json.loads(out)["run_id"]
    md = opsctl("report", run_id, env=env).stdout
    assert f"{moved} message(s) moved" in md


def test_dlq_given_as_the_source_queue_itself_is_refused(opsctl: Callable[..., Result], moto: Moto) -> None:
    queue = moto.client("sqs").create_queue(QueueName="no-policy")["QueueUrl"]
    fill(moto, queue, 5)
    # the same queue, once by name and once by URL: redriving it into itself would re-send every
    # message until max_messages
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", "-p", "queue=no-policy", "-p", f"dlq={queue}",
                    env=moto.env)
    assert result.code == 1, result.output
    assert "the DLQ is the source queue itself" in step(result, "redrive")["reason"]
    assert step(result, "redrive")["status"] == "failed"
    assert depth(moto, queue) == 5


def test_dlq_shared_with_another_queue_is_refused_unless_asked(opsctl: Callable[..., Result],
                                                               moto: Moto) -> None:
    # billing's failed messages sit in the same DLQ: a redrive of orders sent them all to orders
    queue, dlq = make_queue_with_dlq(moto, "orders")
    sqs = moto.client("sqs")
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    billing = sqs.create_queue(QueueName="billing", Attributes={"RedrivePolicy": json.dumps(
        {"deadLetterTargetArn": arn, "maxReceiveCount": "3"})})["QueueUrl"]
    fill(moto, dlq, 20)
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", "-p", "queue=orders", env=moto.env)
    assert result.code == 1, result.output
    assert "orders-dlq is also the DLQ of billing" in step(result, "redrive")["reason"]
    assert (depth(moto, queue), depth(moto, dlq), depth(moto, billing)) == (0, 20, 0)
    forced = opsctl("run", RUNBOOK, "--yes", "-p", "queue=orders", "-p", "shared_dlq=true", env=moto.env)
    assert forced.code == 0, forced.output
    assert (depth(moto, queue), depth(moto, dlq)) == (20, 0)
