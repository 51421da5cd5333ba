"""rb-007 (SQS DLQ redrive) rehearsed through the real CLI against moto in server mode."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.fixtures.aws import (
    Moto,
    check_matrix,
    consumer,
    depth,
    drain_bodies,
    fill,
    make_queue_with_dlq,
    run_step,
)
from tests.fixtures.core import REPO, Result

pytestmark = pytest.mark.aws
RUNBOOK = str(REPO / "runbooks" / "rb-007-sqs-dlq-redrive.yaml")

step = run_step
# nothing consumes the queue in most tests: verify stops watching it after 1 s, not the default 5 s
IDLE = ("-p", "consumer_idle=1s")


def test_dry_run_finds_the_dlq_and_moves_nothing(opsctl: Callable[..., Result], moto: Moto) -> None:
    queue, dlq = make_queue_with_dlq(moto, "plooral-queue")
    fill(moto, dlq, 120)
    result = opsctl("run", RUNBOOK, "--dry-run", "-o", "json", "-p", "queue=plooral-queue", env=moto.env)
    assert result.code == 0, result.output
    depth_step = step(result, "depth")
    assert depth_step["result"]["dlq_visible"] == 120
    assert any("120 message(s) in plooral-queue-dlq" in f["message"] for f in depth_step["findings"])
    assert step(result, "samples")["result"]["count"] == 5
    consumer = step(result, "consumer")["result"]
    assert consumer["total"] == 0 and consumer["bypassing"] == 0  # a count, not a redacted "***"
    assert step(result, "redrive")["status"] == "planned"
    assert (depth(moto, queue), depth(moto, dlq)) == (0, 120)  # the server's view: nothing moved
    attrs = moto.client("sqs").get_queue_attributes(QueueUrl=dlq, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_yes_moves_everything_and_verify_passes(opsctl: Callable[..., Result], moto: Moto) -> None:
    queue, dlq = make_queue_with_dlq(moto, "plooral-queue")
    sent = fill(moto, dlq, 300)
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", "-p", "queue=plooral-queue", env=moto.env)
    assert result.code == 0, result.output
    got = step(result, "redrive")["result"]
    assert (got["planned"], got["moved"], got["duplicates"], got["remaining"]) == (300, 300, 0, 0)
    assert step(result, "drained")["status"] == "ok"
    assert "[client-side]" in step(result, "redrive")["plan"]["summary"]
    # nothing reads the queue here: verify says the messages wait in it (a warning, not a failure)
    consumed = step(result, "consumed")
    assert consumed["result"]["outcome"] == "idle" and consumed["result"]["remaining"] == 300
    assert [f["severity"] for f in consumed["findings"] if "nothing consumed plooral-queue" in f["message"]] \
        == ["warning"]
    assert depth(moto, dlq) == 0
    assert sorted(drain_bodies(moto, queue)) == sent


def test_over_max_messages_is_refused_before_any_change(opsctl: Callable[..., Result], moto: Moto) -> None:
    queue, dlq = make_queue_with_dlq(moto, "plooral-queue")
    fill(moto, dlq, 30)
    result = opsctl("run", RUNBOOK, "--yes", *IDLE, "-p", "queue=plooral-queue", "-p", "max_messages=20",
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


def start_run(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "opsctl", "run", RUNBOOK, *args], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def wait_moved(moto: Moto, queue: str, at_least: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120  # test-side: generous on a loaded machine
    while depth(moto, queue) < at_least and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)


def interrupt(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out, err


def test_interrupted_and_resumed_at_random_points_moves_each_message_exactly_once(
        opsctl_env: dict[str, str], moto: Moto, opsctl: Callable[..., Result]) -> None:
    # defect 3: Ctrl-C at a random point, --resume, Ctrl-C again, --resume: every message reaches
    # the queue exactly once and verify compares exact counts
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    queue, dlq = make_queue_with_dlq(moto, "plooral-queue")
    sent = fill(moto, dlq, 600)
    env = {**opsctl_env, **moto.env}
    proc = start_run(env, "--yes", *IDLE, "-o", "json", "-p", "queue=plooral-queue", "-p", "rate=150")
    wait_moved(moto, queue, rng.randrange(1, 250), proc)
    time.sleep(rng.uniform(0, 0.5))
    code, out, err = interrupt(proc)
    assert code == 130, (seed, out + err)
    first = json.loads(out)
    redrive = next(s for s in first["steps"] if s["id"] == "redrive")
    moved = depth(moto, queue)
    assert redrive["status"] == "interrupted" and redrive["result"]["moved"] == moved, seed
    assert redrive["result"]["duplicates"] == 0 and moved + depth(moto, dlq) == 600, seed
    # the resumed run is interrupted too, somewhere else
    proc = start_run(env, "--yes", "-o", "json", "--resume", first["run_id"], "-p", "rate=150")
    wait_moved(moto, queue, moved + rng.randrange(1, 200), proc)
    code, out, err = interrupt(proc)
    assert code in (0, 130), (seed, out + err)
    second = json.loads(out)
    assert depth(moto, queue) + depth(moto, dlq) == 600, seed
    result = opsctl("run", RUNBOOK, "--yes", *IDLE, "-o", "json", "--resume", second["run_id"], env=moto.env)
    assert result.code == 0, (seed, result.output)
    got = step(result, "redrive")["result"]
    assert (got["planned"], got["moved"], got["duplicates"], got["unknown"]) == (600, 600, 0, 0), seed
    assert step(result, "drained")["status"] == "ok"
    findings = step(result, "drained")["findings"]
    assert any("moved 600 of 600 planned, exactly" in f["message"] for f in findings)
    assert sorted(drain_bodies(moto, queue)) == sent, seed  # none lost, none doubled


def test_killed_mid_redrive_then_rerun_loses_and_doubles_nothing(opsctl_env: dict[str, str], moto: Moto,
                                                                 opsctl: Callable[..., Result]) -> None:
    # SIGKILL: no clean-up code runs; the ledger still knows what was sent
    queue, dlq = make_queue_with_dlq(moto, "plooral-queue")
    sent = fill(moto, dlq, 500)
    env = {**opsctl_env, **moto.env}
    proc = start_run(env, "--yes", *IDLE, "-p", "queue=plooral-queue", "-p", "rate=300",
                     "-p", "visibility_timeout=3")
    wait_moved(moto, queue, 100, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    moved = depth(moto, queue)
    assert 0 < moved < 500
    time.sleep(3.2)  # visibility timeout of the messages the dead run had received
    result = opsctl("run", RUNBOOK, "--yes", *IDLE, "-o", "json", "-p", "queue=plooral-queue", env=moto.env)
    got = step(result, "redrive")["result"]
    assert got["duplicates"] == 0 and got["planned"] == 500
    if got["unknown"]:  # killed during a send: those are left in the DLQ, said so, not verified
        assert result.code == 1, result.output
        assert got["moved"] + got["unknown"] == 500 and depth(moto, dlq) == got["unknown"]
        time.sleep(3.2)
        result = opsctl("run", RUNBOOK, "--yes", *IDLE, "-o", "json", "-p", "queue=plooral-queue",
                        "-p", "resend_unknown=true", env=moto.env)
    assert result.code == 0, result.output
    bodies = drain_bodies(moto, queue)
    assert set(bodies) == set(sent)  # nothing lost
    assert len(bodies) - len(sent) <= got["unknown"]  # only what the operator chose to resend


def test_ctrl_c_mid_redrive_records_what_was_moved(opsctl_env: dict[str, str], moto: Moto,
                                                  opsctl: Callable[..., Result]) -> None:
    # the post-mortem must say how many messages had moved when the on-call engineer stopped it
    queue, dlq = make_queue_with_dlq(moto, "plooral-queue")
    fill(moto, dlq, 500)
    env = {**opsctl_env, **moto.env}
    proc = start_run(env, "--yes", *IDLE, "-o", "json", "-p", "queue=plooral-queue", "-p", "rate=200")
    wait_moved(moto, queue, 100, proc)
    code, out, err = interrupt(proc)
    assert code == 130, out + err
    moved = depth(moto, queue)
    assert 0 < moved < 500
    redrive = next(s for s in json.loads(out)["steps"] if s["id"] == "redrive")
    assert redrive["status"] == "interrupted"
    assert redrive["result"]["moved"] == moved and redrive["result"]["stopped"] == "interrupted"
    assert f"{moved} of 500 message(s) moved" in redrive["reason"]
    run_id = json.loads(out)["run_id"]
    md = opsctl("report", run_id, env=env).stdout
    assert f"{moved} of 500 message(s) moved" in " ".join(md.split())


def test_partial_redrive_says_how_many_remain_and_is_never_verified(opsctl: Callable[..., Result],
                                                                    moto: Moto) -> None:
    queue, dlq = make_queue_with_dlq(moto, "plooral-queue")
    fill(moto, dlq, 50)
    result = opsctl("run", RUNBOOK, "--yes", *IDLE, "-o", "json", "-p", "queue=plooral-queue",
                    "-p", "max_messages=30", "-p", "partial=true", env=moto.env)
    assert result.code == 1, result.output
    doc = json.loads(result.stdout)
    assert "verified" not in doc["message"] or "verification failed" in doc["message"]
    assert any("20 message(s) will remain" in w for w in step(result, "redrive")["plan"]["warnings"])
    got = step(result, "redrive")["result"]
    assert (got["planned"], got["moved"], got["remaining"]) == (30, 30, 20)
    assert any("partial redrive: 20 message(s) remain" in f["message"] and f["severity"] == "critical"
               for f in step(result, "drained")["findings"])
    assert (depth(moto, queue), depth(moto, dlq)) == (30, 20)


def test_messages_in_flight_in_the_dlq_are_not_an_empty_dlq(opsctl: Callable[..., Result],
                                                             moto: Moto) -> None:
    # defect 12: a consumer holds every DLQ message hidden; 0 visible is not "empty"
    queue, dlq = make_queue_with_dlq(moto, "plooral-queue")
    fill(moto, dlq, 10)
    moto.client("sqs").receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, VisibilityTimeout=120)
    result = opsctl("run", RUNBOOK, "--yes", "-o", "json", "-p", "queue=plooral-queue", env=moto.env)
    assert result.code == 1, result.output
    assert any("10 more in flight" in f["message"] for f in step(result, "depth")["findings"])
    reason = step(result, "redrive")["reason"]
    assert "0 visible messages but 10 in flight" in reason and "it is not empty" in reason
    assert "is empty" not in result.output
    assert (depth(moto, queue), depth(moto, dlq)) == (0, 10)


def test_server_side_mode_is_detected_and_falls_back_to_the_client_mover(opsctl: Callable[..., Result],
                                                                         moto: Moto) -> None:
    # moto has no StartMessageMoveTask: auto falls back and the plan says so; server is refused
    queue, dlq = make_queue_with_dlq(moto, "plooral-queue")
    fill(moto, dlq, 20)
    auto = opsctl("run", RUNBOOK, "--yes", *IDLE, "-o", "json", "-p", "queue=plooral-queue",
                  "-p", "mode=auto",
                  env=moto.env)
    assert auto.code == 0, auto.output
    plan = step(auto, "redrive")["plan"]
    assert "[client-side]" in plan["summary"]
    assert "fallback: ListMessageMoveTasks answered" in plan["changes"][0]["detail"]
    assert step(auto, "redrive")["result"]["mode"] == "client"
    fill(moto, dlq, 5)
    server = opsctl("run", RUNBOOK, "--dry-run", "-o", "json", "-p", "queue=plooral-queue",
                    "-p", "mode=server", env=moto.env)
    assert "the endpoint does not support StartMessageMoveTask" in step(server, "redrive")["reason"]
    assert depth(moto, dlq) == 5


def test_dlq_given_as_the_source_queue_itself_is_refused(opsctl: Callable[..., Result], moto: Moto) -> None:
    queue = moto.client("sqs").create_queue(QueueName="no-policy")["QueueUrl"]
    fill(moto, queue, 5)
    # the same queue, once by name and once by URL: redriving it into itself would re-send every
    # message until max_messages
    result = opsctl("run", RUNBOOK, "--yes", *IDLE, "-o", "json", "-p", "queue=no-policy",
                    "-p", f"dlq={queue}",
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
    result = opsctl("run", RUNBOOK, "--yes", *IDLE, "-o", "json", "-p", "queue=orders", env=moto.env)
    assert result.code == 1, result.output
    assert "orders-dlq is also the DLQ of billing" in step(result, "redrive")["reason"]
    assert (depth(moto, queue), depth(moto, dlq), depth(moto, billing)) == (0, 20, 0)
    forced = opsctl("run", RUNBOOK, "--yes", *IDLE, "-p", "queue=orders", "-p", "shared_dlq=true",
                    env=moto.env)
    assert forced.code == 0, forced.output
    assert (depth(moto, queue), depth(moto, dlq)) == (20, 0)


# ---- fault matrix ---------------------------------------------------------------------------------
# fault -> ("test", the test that rehearses it end to end through the CLI) or ("n/a", why not)
FAULT_MATRIX: dict[str, tuple[str, str]] = {
    "dead": ("test", "test_unreachable_endpoint_exits_4_without_traceback"),
    "hung": ("test", "test_hung_endpoint_exits_4_within_the_step_deadline"),
    "slow": ("test", "test_slow_endpoint_still_redrives_exactly"),
    "denied_optional": ("test", "test_denied_optional_probe_degrades_to_a_failed_optional_step"),
    "denied_required": ("test", "test_invalid_credentials_exit_4"),
    "ordinary_role": ("n/a", "AWS has no superuser role to drop: the runbook's identity is an IAM "
                             "principal, whose limits are the two denied cells"),
    "scope": ("test", "test_dlq_shared_with_another_queue_is_refused_unless_asked"),
    "converges_slowly": ("test", "test_verify_waits_for_a_slow_worker_to_consume_the_redriven_messages"),
    "fix_fails": ("test", "test_a_worker_that_still_fails_sends_the_messages_back_and_verify_fails"),
    "interrupt_resume": ("test",
                         "test_interrupted_and_resumed_at_random_points_moves_each_message_exactly_once"),
}


def test_fault_matrix_cells_are_tested_or_explained() -> None:
    check_matrix(FAULT_MATRIX, globals())


def test_hung_endpoint_exits_4_within_the_step_deadline(opsctl: Callable[..., Result], moto: Moto,
                                                        silent_server: Any) -> None:
    # accepts TCP, never answers: every AWS call is bounded by the 30 s step deadline (no knob)
    env = {**moto.env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{silent_server.port}"}
    result = opsctl("run", RUNBOOK, "--dry-run", "-o", "json", "-p", "queue=plooral-queue", env=env,
                    timeout=200)
    assert result.code == 4, result.output
    depth_step = step(result, "depth")
    assert depth_step["status"] == "failed" and depth_step["error_kind"] == "backend"
    assert "accepted the connection but did not answer in time" in depth_step["reason"]
    assert "abandoned" not in result.output and "Traceback" not in result.output


def test_slow_endpoint_still_redrives_exactly(opsctl: Callable[..., Result],
                                              slow_moto: tuple[Moto, Any], moto: Moto) -> None:
    slow, proxy = slow_moto
    proxy.delay = 0.3
    queue, dlq = make_queue_with_dlq(moto, "plooral-queue")
    sent = fill(moto, dlq, 30)
    result = opsctl("run", RUNBOOK, "--yes", *IDLE, "-o", "json", "-p", "queue=plooral-queue", env=slow.env)
    assert result.code == 0, result.output
    got = step(result, "redrive")["result"]
    assert (got["planned"], got["moved"], got["duplicates"]) == (30, 30, 0)
    assert sorted(drain_bodies(moto, queue)) == sent


def test_denied_optional_probe_degrades_to_a_failed_optional_step(opsctl: Callable[..., Result],
                                                                  moto: Moto, moto_iam: Moto) -> None:
    # Lambda (the consumer probe) answers with moto's IAM enforcement: access denied; SQS works
    make_queue_with_dlq(moto, "plooral-queue")
    env = {**moto.env, "AWS_ENDPOINT_URL_LAMBDA": moto_iam.endpoint}
    result = opsctl("run", RUNBOOK, "--dry-run", "-o", "json", "-p", "queue=plooral-queue", env=env,
                    timeout=200)
    assert result.code == 0, result.output
    consumer = step(result, "consumer")
    assert consumer["status"] == "failed" and "access denied" in consumer["reason"]
    assert step(result, "depth")["status"] == "ok"


def test_messages_failing_again_fail_verify(opsctl_env: dict[str, str], moto: Moto,
                                            opsctl: Callable[..., Result]) -> None:
    # the worker is still broken: redriven messages come back to the DLQ while the redrive goes on
    # (rate=10/s: 40 messages take ~4 s, so the first ones fail again well before verify looks;
    # at full speed the move ends before any failure could come back, and verify saw a clean DLQ)
    queue, dlq = make_queue_with_dlq(moto, "plooral-queue")
    fill(moto, dlq, 40)

    def fail_again() -> None:
        end = time.monotonic() + 200
        while depth(moto, queue) < 10 and time.monotonic() < end:
            time.sleep(0.05)
        fill(moto, dlq, 5)

    threading.Thread(target=fail_again, daemon=True).start()
    result = opsctl("run", RUNBOOK, "--yes", *IDLE, "-o", "json", "-p", "queue=plooral-queue",
                    "-p", "rate=10",
                    env=moto.env)
    assert result.code == 1, result.output
    got = step(result, "redrive")["result"]
    assert (got["planned"], got["moved"], got["duplicates"]) == (40, 40, 0)
    assert any("messages are failing again" in f["message"] and f["severity"] == "critical"
               for f in step(result, "drained")["findings"])


def test_a_worker_that_still_fails_sends_the_messages_back_and_verify_fails(
        opsctl: Callable[..., Result], moto: Moto) -> None:
    """QA: verify said "verified" as soon as the DLQ was empty, while the worker was still failing:
    the messages came back to the DLQ minutes later.  A real worker receives each message and never
    deletes it; after maxReceiveCount (2) receives SQS moves it back to the DLQ."""
    queue, dlq = make_queue_with_dlq(moto, "plooral-queue", max_receive=2)
    fill(moto, dlq, 30)
    with consumer(moto, queue, fails=True) as worker:
        result = opsctl("run", RUNBOOK, "--yes", "-o", "json", "-p", "queue=plooral-queue", env=moto.env,
                        timeout=300)
    assert result.code == 1, result.output
    got = step(result, "redrive")["result"]
    assert (got["planned"], got["moved"], got["duplicates"]) == (30, 30, 0)  # the move itself was exact
    consumed = step(result, "consumed")
    assert consumed["result"]["outcome"] == "bounced" and consumed["result"]["back_in_dlq"] > 0, consumed
    assert any("the worker still fails them" in f["message"] and f["severity"] == "critical"
               for f in consumed["findings"])
    assert worker.failed >= 30 and not worker.done


def test_a_healthy_worker_consumes_the_redriven_messages_and_verify_says_so(
        opsctl: Callable[..., Result], moto: Moto) -> None:
    queue, dlq = make_queue_with_dlq(moto, "plooral-queue")
    sent = fill(moto, dlq, 60)
    with consumer(moto, queue) as worker:
        result = opsctl("run", RUNBOOK, "--yes", "-o", "json", "-p", "queue=plooral-queue", env=moto.env)
        assert result.code == 0, result.output
    consumed = step(result, "consumed")
    assert consumed["result"]["outcome"] == "consumed" and consumed["result"]["consumer_seen"], consumed
    assert any(f["message"].startswith("none of the 60 redriven message(s) came back to plooral-queue-dlq "
                                       "(consumed in ") for f in consumed["findings"]), consumed["findings"]
    assert sorted(worker.done) == sent and depth(moto, queue) == depth(moto, dlq) == 0  # each once


def test_verify_waits_for_a_slow_worker_to_consume_the_redriven_messages(
        opsctl: Callable[..., Result], moto: Moto) -> None:
    """Converges slowly: 50 messages at 10 every 0.5 s take seconds; verify waits for them (within
    consume_window), neither passing before they are consumed nor failing while they are."""
    queue, dlq = make_queue_with_dlq(moto, "plooral-queue")
    sent = fill(moto, dlq, 50)
    with consumer(moto, queue, pause=0.5) as worker:
        result = opsctl("run", RUNBOOK, "--yes", "-o", "json", "-p", "queue=plooral-queue", env=moto.env)
        assert result.code == 0, result.output
    consumed = step(result, "consumed")["result"]
    assert consumed["outcome"] == "consumed" and consumed["checks"] > 1, consumed
    assert sorted(worker.done) == sent


def test_a_worker_slower_than_the_window_is_not_verified(opsctl: Callable[..., Result], moto: Moto) -> None:
    queue, dlq = make_queue_with_dlq(moto, "plooral-queue")
    fill(moto, dlq, 50)
    with consumer(moto, queue, pause=2.0):
        result = opsctl("run", RUNBOOK, "--yes", "-o", "json", "-p", "queue=plooral-queue",
                        "-p", "consume_window=3s", env=moto.env)
    assert result.code == 1, result.output
    consumed = step(result, "consumed")
    assert consumed["result"]["outcome"] == "timeout" and consumed["result"]["remaining"] > 0, consumed
    assert any("not consumed yet" in f["message"] and f["severity"] == "critical"
               for f in consumed["findings"])
