"""SQS DLQ redrive throughput: opsctl's client-side mover (pipelined receive / send / delete stages,
``workers`` threads each, batches of 10, with its exactly-once ledger written for every batch) vs the
single-threaded receive -> send -> delete loop a hand-written script would use (also in batches
of 10, so the difference is the pipelining and parallelism alone).  One run of each, same message count, same
moto server (started privately in server mode by the kit, its SQS made to scale and served by cheroot:
see opsctl/testing/moto_patches.py).

    .venv/bin/python bench/sqs_redrive_throughput.py [MESSAGES] [WORKERS] [RTT_MS]   # 5000, 4, 0

Against moto on localhost the server (one Python process, GIL-bound) is the bottleneck, so the
ratio is a floor.  RTT_MS adds that much simulated network latency before every request (a botocore
before-send hook on the shared client), which is what dominates against AWS from a laptop or a
bastion: then the workers overlap the waits.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))


def single_threaded(sqs: Any, dlq: str, queue: str) -> int:
    moved = 0
    while True:
        got = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                  MessageAttributeNames=["All"]).get("Messages", [])
        if not got:
            return moved
        sent = sqs.send_message_batch(QueueUrl=queue, Entries=[
            {"Id": str(i), "MessageBody": m["Body"], "MessageAttributes": m.get("MessageAttributes", {})}
            for i, m in enumerate(got)])
        ok = {s["Id"] for s in sent.get("Successful", [])}
        sqs.delete_message_batch(QueueUrl=dlq, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got) if str(i) in ok])
        moved += len(ok)


def main() -> None:
    from opsctl.actions.aws.ledger import Ledger
    from opsctl.backends.sqs_redrive import Mover
    from opsctl.testing.aws import depth, fill, make_queue_with_dlq, moto_process

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    rtt = float(sys.argv[3]) / 1000 if len(sys.argv) > 3 else 0.0
    with moto_process() as moto:
        sqs = moto.client("sqs")
        if rtt:
            sqs.meta.events.register("before-send", lambda **_: time.sleep(rtt))
        print(f"{n} messages, simulated RTT {rtt * 1000:.0f} ms")
        results = {}
        for name in ("single-threaded loop", f"opsctl mover ({workers} workers)"):
            queue, dlq = make_queue_with_dlq(moto, f"bench{len(results)}")
            fill(moto, dlq, n)
            started = time.perf_counter()
            if name.startswith("single"):
                moved = single_threaded(sqs, dlq, queue)
            else:
                ledger = Ledger(Path(tempfile.mkdtemp()) / "ledger.jsonl")
                ledger.start(n, "bench", dlq, queue)
                moved = Mover(sqs, dlq, queue, max_messages=n, workers=workers, wait_seconds=0,
                              journal=ledger).run().moved
                assert ledger.moved == n and ledger.duplicates == 0, (ledger.moved, ledger.duplicates)
            elapsed = time.perf_counter() - started
            assert moved == n and depth(moto, queue) == n and depth(moto, dlq) == 0, (moved, name)
            results[name] = n / elapsed
            print(f"{name:32s} {n} in {elapsed:6.2f} s  {n / elapsed:8.1f} msg/s")
        single, mover = results.values()
        # both sides share the machine: a loaded one slows the CPU-bound mover more than the loop
        print(f"ratio: {mover / single:.2f}x  (load average {os.getloadavg()[0]:.1f} on "
              f"{os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
