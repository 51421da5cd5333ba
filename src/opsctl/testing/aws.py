"""moto in server mode, in its own process, reached over HTTP; builders of the AWS faults.

opsctl only ever sees ``AWS_ENDPOINT_URL`` + fake credentials + a region (no in-process mock_aws),
so every call it makes is a real HTTP request.  Set-up code uses boto3 against the same endpoint to
create resources and inject faults (a DLQ filled with messages, an ECS service whose tasks do not
run, a Lambda worker with versions).  Needs ``moto[server]`` (the ``testing`` extra).
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opsctl.testing.ports import free_port
from opsctl.testing.unavailable import Unavailable

REGION = "eu-west-1"


@dataclass
class Moto:
    endpoint: str
    pid: int
    env: dict[str, str] = field(default_factory=dict)  # what an opsctl subprocess needs

    def client(self, service: str) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id="testing", aws_secret_access_key="testing",
                            config=Config(max_pool_connections=32, retries={"max_attempts": 2}))

    def reset(self) -> None:
        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        urllib.request.urlopen(req, timeout=10).read()


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError("moto_server did not start")


def moto_available() -> str | None:
    """None when moto's server can be started here, else why not (a skip reason)."""
    import importlib.util

    if any(importlib.util.find_spec(m) is None for m in ("moto", "flask", "cheroot")):
        return "moto[server] is not installed (pip install 'opsctl-runbooks[testing]')"
    return None


@contextmanager
def moto_process(workdir: Path | None = None, extra_env: dict[str, str] | None = None) -> Iterator[Moto]:
    """moto_server on a free port (``extra_env``: e.g. ``INITIAL_NO_AUTH_ACTION_COUNT=0`` for a moto
    that checks IAM); stopped by PID on exit.  Raises Unavailable when moto is not installed."""
    reason = moto_available()
    if reason:
        raise Unavailable(reason)
    workdir = workdir or Path(tempfile.mkdtemp(prefix="opsctl-moto-"))
    port = free_port()
    log = open(workdir / "moto.log", "wb")  # noqa: SIM115 - closed below, after the server
    # moto reports 0 running tasks for a new ECS service (MOTO_ECS_SERVICE_RUNNING unset): that is
    # the natural "desired != running" fault for rb-011
    serve = f"from opsctl.testing.moto_patches import serve; serve({port})"
    proc = subprocess.Popen([sys.executable, "-c", serve], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "false",
                                 **(extra_env or {})})
    try:
        _wait_port(port, proc)
        endpoint = f"http://127.0.0.1:{port}"
        env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION,
               "AWS_CONFIG_FILE": str(workdir / "no-config"),
               "AWS_SHARED_CREDENTIALS_FILE": str(workdir / "no-credentials"),
               "AWS_EC2_METADATA_DISABLED": "true"}
        yield Moto(endpoint=endpoint, pid=proc.pid, env=env)
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


# ---- resource builders used by the action and runbook tests -------------------------------------

def make_queue_with_dlq(moto: Moto, name: str, *, fifo: bool = False,
                        max_receive: int = 3) -> tuple[str, str]:
    """Create ``name`` with a DLQ ``name-dlq``; returns (queue_url, dlq_url)."""
    import json

    sqs = moto.client("sqs")
    suffix, attrs = (".fifo", {"FifoQueue": "true"}) if fifo else ("", {})
    dlq = sqs.create_queue(QueueName=f"{name}-dlq{suffix}", Attributes=attrs)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive)})
    queue = sqs.create_queue(QueueName=f"{name}{suffix}",
                             Attributes={**attrs, "RedrivePolicy": policy})["QueueUrl"]
    return queue, dlq


def fill(moto: Moto, url: str, n: int, *, fifo: bool = False, groups: int = 4) -> list[str]:
    """Send ``n`` numbered messages with attributes (straight into ``url``); returns the bodies.
    FIFO queues are filled by one thread so that each group is in numeric order."""
    from concurrent.futures import ThreadPoolExecutor

    sqs = moto.client("sqs")
    bodies = [f"msg-{i:06d}" for i in range(n)]

    def send(start: int) -> None:
        entries = []
        for i in range(start, min(start + 10, n)):
            e: dict[str, Any] = {"Id": str(i), "MessageBody": bodies[i], "MessageAttributes": {
                "tenant": {"DataType": "String", "StringValue": f"t{i % 7}"},
                "seq": {"DataType": "Number", "StringValue": str(i)}}}
            if fifo:
                e |= {"MessageGroupId": f"g{i % groups}", "MessageDeduplicationId": f"d{i}"}
            entries.append(e)
        got = sqs.send_message_batch(QueueUrl=url, Entries=entries)
        assert not got.get("Failed"), got.get("Failed")

    with ThreadPoolExecutor(1 if fifo else 8) as pool:
        list(pool.map(send, range(0, n, 10)))
    return bodies


def queue_url_of(moto: Moto, name: str) -> str:
    return str(moto.client("sqs").get_queue_url(QueueName=name)["QueueUrl"])


def depth(moto: Moto, url: str) -> int:
    """Visible + in-flight messages of a queue."""
    a = moto.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"])


def drain_bodies(moto: Moto, url: str) -> list[str]:
    """Receive and delete everything in a queue (for the final conservation checks)."""
    sqs, bodies = moto.client("sqs"), list[str]()
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60,
                                  WaitTimeSeconds=0).get("Messages", [])
        if not got:
            return bodies
        bodies += [m["Body"] for m in got]
        sqs.delete_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])


@dataclass
class Consumer:
    """What a :func:`consumer` did: the bodies it processed (deleted) and how many receives failed."""

    done: list[str] = field(default_factory=list)
    failed: int = 0


@contextmanager
def consumer(moto: Moto, url: str, *, fails: bool = False, visibility: int = 1,
             pause: float = 0.0) -> Iterator[Consumer]:
    """A worker reading ``url`` over SQS, as a Lambda trigger or a poller does, while the block runs:
    it deletes what it receives, or with ``fails`` leaves it (the message comes back after
    ``visibility`` seconds, and goes to the DLQ after the RedrivePolicy's maxReceiveCount);
    ``pause`` seconds between two batches of up to 10 (a slow worker)."""
    import threading

    sqs, seen, stop = moto.client("sqs"), Consumer(), threading.Event()

    def work() -> None:
        while not stop.is_set():
            try:
                poll()
            except Exception:  # noqa: BLE001 - the queue went away (the server was cleared): stop
                return

    def poll() -> None:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=visibility,
                                  WaitTimeSeconds=1).get("Messages", [])
        if fails:
            seen.failed += len(got)
        elif got:
            sqs.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])
            seen.done += [m["Body"] for m in got]
        if got and pause:
            stop.wait(pause)

    worker = threading.Thread(target=work, name="sqs-consumer", daemon=True)
    worker.start()
    try:
        yield seen
    finally:
        stop.set()
        worker.join(timeout=30)


def make_aurora(moto: Moto, cluster: str, members: int = 2) -> list[str]:
    rds = moto.client("rds")
    rds.create_db_cluster(DBClusterIdentifier=cluster, Engine="aurora-postgresql",
                          MasterUsername="ops", MasterUserPassword="not-a-secret-1")
    ids = [f"{cluster}-{i + 1}" for i in range(members)]
    for i in ids:
        rds.create_db_instance(DBInstanceIdentifier=i, DBClusterIdentifier=cluster,
                               Engine="aurora-postgresql", DBInstanceClass="db.r6g.large")
    return ids


def make_ecs_service(moto: Moto, cluster: str, service: str, desired: int = 3) -> list[str]:
    """A service deployed on revision 1, then on revision 2 (its deployment history); moto reports
    0 running."""
    ecs = moto.client("ecs")
    ecs.create_cluster(clusterName=cluster)
    arns = [ecs.register_task_definition(family=service, containerDefinitions=[
        {"name": "api", "image": f"plooral/api:{v}", "memory": 512}])["taskDefinition"]["taskDefinitionArn"]
        for v in ("1.0", "1.1")]
    ecs.create_service(cluster=cluster, serviceName=service, taskDefinition=arns[0],
                       desiredCount=desired)
    ecs.update_service(cluster=cluster, service=service, taskDefinition=arns[1])
    return arns


def lambda_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("handler.py", "def handle(event, context):\n    return 'ok'\n")
    return buf.getvalue()


def make_worker(moto: Moto, function: str, *, versions: int = 2, alias: str = "LIVE") -> None:
    """A function with ``versions`` published versions and an alias on the newest."""
    iam, lam = moto.client("iam"), moto.client("lambda")
    role = iam.create_role(RoleName=f"{function}-role", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    lam.create_function(FunctionName=function, Runtime="python3.12", Role=role, Handler="handler.handle",
                        Code={"ZipFile": lambda_zip()}, Publish=True)
    for _ in range(versions - 1):
        lam.update_function_code(FunctionName=function, ZipFile=lambda_zip(), Publish=True)
    lam.create_alias(FunctionName=function, Name=alias, FunctionVersion=str(versions))


# ---- moto's SQS does not scale: make it, for the server process only ------------------------------
