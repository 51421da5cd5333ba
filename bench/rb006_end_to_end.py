"""Time rb-006 end to end (diagnose + mitigate + verify) on a real injected pool exhaustion.

A private PostgreSQL 15 (max_connections 20) gets a "checkout-api" that leaks 16 connections idle
in transaction (90 % of the pool with 2 other sessions).  Each round injects the fault afresh and
runs the real CLI, `opsctl run rb-006 --yes --option kill-long-queries`, as a subprocess; the
wall time includes Python start-up.  Also timed: the dry-run alone (what the on-call reads first).
Printed next to seed 002's target for doing RB-006 by hand (5-10 min), as a ratio.

    .venv/bin/python bench/rb006_end_to_end.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from opsctl.testing.postgres import PgServer, start_postgres  # noqa: E402

MANUAL_TARGET = (5 * 60, 10 * 60)  # seed 002: RB-006 recovery target, 5-10 minutes


def inject(pg: PgServer) -> None:
    pg.clear_faults()
    pg.open_sessions(16, "checkout-api", in_transaction=True)
    pg.open_sessions(2, "worker")
    time.sleep(1.1)  # past idle_in_transaction_seconds=1


def timed(env: dict[str, str], *args: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "opsctl", "run", "rb-006", *args, "-p",
                           "idle_in_transaction_seconds=1"], env=env, cwd=REPO, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    return time.perf_counter() - t0, proc.returncode


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    rounds = ap.parse_args().rounds
    pg = start_postgres(max_connections=20)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("PG", "OPSCTL_", "DATABASE_URL"))},
           **pg.env("ops"), "OPSCTL_STATE_DIR": tempfile.mkdtemp(prefix="opsctl-bench-"),
           "OPSCTL_RUNBOOK_PATH": str(REPO / "runbooks")}
    dry, full = [], []
    try:
        for _ in range(rounds):
            inject(pg)
            seconds, code = timed(env, "--dry-run")
            assert code == 0 and pg.count("state = 'idle in transaction'") == 16, "dry-run changed something"
            dry.append(seconds)
            seconds, code = timed(env, "--yes", "--option", "kill-long-queries")
            assert code == 0 and pg.count("application_name = 'checkout-api'") == 0, "fault not fixed"
            full.append(seconds)
    finally:
        pg.stop()
    med, worst = statistics.median(full), max(full)
    print(f"rb-006 on a real pool exhaustion (16 leaked of max_connections 20), {rounds} rounds, "
          "real CLI subprocess:")
    print(f"  dry-run (diagnose + plan):            median {statistics.median(dry):6.2f} s")
    print(f"  --yes (diagnose + terminate + verify): median {med:6.2f} s  (worst {worst:.2f} s)")
    low, high = MANUAL_TARGET
    print(f"  seed 002 manual target:                {low / 60:.0f}-{high / 60:.0f} min")
    print(f"  ratio manual/opsctl (median):          {low / med:,.0f}x-{high / med:,.0f}x "
          "(the human's reading and typing time is not in opsctl's figure: a --yes run still needs "
          "someone to decide)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
