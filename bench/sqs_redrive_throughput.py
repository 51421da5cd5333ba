"""SQS DLQ redrive throughput: opsctl's client-side mover (pipelined receive / send / delete stages,
``workers`` threads each, batches of 10, with its exactly-once ledger written for every batch) vs the
single-threaded receive -> send -> delete loop a hand-written script would use (also in batches
of 10, so the difference is the pipelining and parallelism alone).  One run of each, same message
count, same boto3 client, same moto server (started privately in server mode by the kit, its SQS
made to scale and to answer cheaply, served by cheroot: see opsctl/testing/moto_patches.py and
moto_sqs.py).  Both runs must move every message exactly once (the mover's ledger counts moved and
duplicates; both queues are counted after each run): a short count fails the bench, it is never
reported as a figure.

    .venv/bin/python bench/sqs_redrive_throughput.py [MESSAGES] [WORKERS] [RTT_MS]   # 5000, 4, 0

RTT_MS adds that much simulated network latency before every request (a botocore before-send hook
on the shared client), which is what dominates against AWS from a laptop or a bastion.

How to read it.  Each line gives the wall time, the rate, and the CPU seconds (user + system) of
the moto server process and of this process (boto3 and the mover's threads) during that run.
- The loop is bound by latency: per 10 messages, 3 round trips of RTT plus ~13 ms of CPU (server
  and client), so 100-120 msg/s at 20 ms, on a busy machine or not.  Its server CPU per message is
  ~40 % above the mover's for the same calls (a run 8x longer; where the rest goes was not profiled).
- The mover overlaps up to 3 x WORKERS round trips (~1,500 msg/s at 20 ms with 4 workers), so on
  a 2-core machine it is bound by CPU instead: ~1 ms per message, about half of it the server's.
  A machine busy with other work (a load average above the core count) gives it less CPU and the
  ratio falls while its CPU seconds stay the same: compare CPU ms/msg between runs to tell a busy
  machine from a regression, and the printed load average to compare ratios.
- ratio = mover msg/s / loop msg/s, measured in the same run.  Against moto on localhost the
  single server process is a floor: AWS serves the stages in parallel.
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


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system) the moto server process has used so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
        print(f"{n} messages, simulated RTT {rtt * 1000:.0f} ms, {os.cpu_count()} cores, "
              f"load average {os.getloadavg()[0]:.1f} at the start")
        results = {}
        for name in ("single-threaded loop", f"opsctl mover ({workers} workers)"):
            queue, dlq = make_queue_with_dlq(moto, f"bench{len(results)}")
            fill(moto, dlq, n)
            server0, client0 = server_cpu(moto.pid), time.process_time()
            started = time.perf_counter()
            if name.startswith("single"):
                moved = single_threaded(sqs, dlq, queue)
            else:
                ledger = Ledger(Path(tempfile.mkdtemp()) / "ledger.jsonl")
                ledger.start(n, "bench", dlq, queue)
                stats = Mover(sqs, dlq, queue, max_messages=n, workers=workers, wait_seconds=0,
                              journal=ledger).run()
                moved = stats.moved
                # a short count is a failed run, never a figure: say what the mover saw
                assert ledger.moved == n and ledger.duplicates == 0, (ledger.summary(), stats)
            elapsed = time.perf_counter() - started
            server, client = server_cpu(moto.pid) - server0, time.process_time() - client0
            left = (depth(moto, queue), depth(moto, dlq))
            assert moved == n and left == (n, 0), (name, moved, "queue, DLQ:", left)
            results[name] = n / elapsed
            print(f"{name:28s} {n} in {elapsed:6.2f} s {n / elapsed:7.1f} msg/s   CPU s: "
                  f"server {server:5.2f} ({server / n * 1000:.2f} ms/msg), client {client:5.2f}")
        single, mover = results.values()
        # both sides share the machine: a loaded one slows the CPU-bound mover more than the loop
        print(f"ratio: {mover / single:.2f}x  (load average {os.getloadavg()[0]:.1f} on "
              f"{os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
