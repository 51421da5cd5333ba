"""Rehearse a real incident end to end: a private PostgreSQL whose connection pool a leaking
"checkout-api" has exhausted, diagnosed and fixed by runbook rb-006 through the real CLI.

Run by scripts/demo.sh with the venv's python.  Starts PostgreSQL 15 on a free port in a temp dir
(with opsctl's rehearsal kit, opsctl.testing), injects the fault with real connections left idle
in transaction, runs
`opsctl run rb-006 --dry-run`, then `--yes --option kill-long-queries`, prints the server's view
before and after, renders `opsctl report <run-id>`, and removes the server it started; the runs stay
in opsctl's run log (`opsctl runs`), so the suggested commands work afterwards.

    .venv/bin/python scripts/demo.py [--leaked 16] [--idle-seconds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from opsctl.testing.postgres import PgServer, start_postgres

REPO = Path(__file__).resolve().parents[1]


def banner(text: str) -> None:
    print(f"\n\033[1m=== {text} ===\033[0m\n" if sys.stdout.isatty() else f"\n=== {text} ===\n", flush=True)


def server_view(pg: PgServer) -> None:
    """What the DBA would see in psql: connections by application and state."""
    rows = pg.sql("SELECT coalesce(nullif(application_name, ''), '-') AS app, state, count(*) "
                  "FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() "
                  "GROUP BY 1, 2 ORDER BY 3 DESC")
    total = sum(r[2] for r in rows)
    print(f"pg_stat_activity: {total}/{pg.max_connections} client connections "
          f"({100 * total / pg.max_connections:.0f} % of max_connections)")
    for app, state, n in rows:
        print(f"  {n:>3}  {app:<14} {state}")


def opsctl(env: dict[str, str], *args: str, capture: bool = False) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "opsctl", *args]
    print("$ opsctl " + " ".join(args), flush=True)
    return subprocess.run(cmd, env=env, cwd=REPO, text=True, stdin=subprocess.DEVNULL,
                          capture_output=capture, check=False)


def inject(pg: PgServer, leaked: int, idle_seconds: float) -> None:
    pg.leak_connections(leaked, "checkout-api")  # as the ordinary role `app`
    pg.leak_connections(2, "worker", idle_in_transaction=False)
    time.sleep(idle_seconds + 0.5)  # the leaked transactions age past the threshold


def last_run_id(env: dict[str, str]) -> str:
    proc = subprocess.run([sys.executable, "-m", "opsctl", "runs", "-n", "1", "-o", "json"], env=env,
                          cwd=REPO, text=True, capture_output=True, check=True)
    runs = json.loads(proc.stdout)
    first = runs[0] if isinstance(runs, list) else runs["runs"][0]
    return str(first.get("run_id") or first.get("id"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--leaked", type=int, default=16, help="connections the app leaks (max_connections 20)")
    ap.add_argument("--idle-seconds", type=float, default=3, help="idle_in_transaction_seconds for the demo")
    opts = ap.parse_args()

    banner("Starting a private PostgreSQL 15 (max_connections 20)")
    pg = start_postgres(max_connections=20)
    # the runs go to opsctl's own run log (OPSCTL_STATE_DIR or ~/.local/state/opsctl): `opsctl runs`
    # and `opsctl report RUN_ID` find them after the demo
    keep = ("OPSCTL_STATE_DIR",)
    env = {**{k: v for k, v in os.environ.items()
              if k in keep or not k.startswith(("PG", "OPSCTL_", "DATABASE_URL"))},
           **pg.env("ops"), "OPSCTL_RUNBOOK_PATH": str(REPO / "runbooks")}
    params = ["-p", f"idle_in_transaction_seconds={opts.idle_seconds:g}", "-p", "application_name=checkout-*"]
    try:
        print(f"listening on 127.0.0.1:{pg.port}; opsctl connects as role 'ops' "
              "(pg_monitor + pg_signal_backend, not a superuser)")
        banner(f"Incident: checkout-api leaks {opts.leaked} connections idle in transaction")
        inject(pg, opts.leaked, opts.idle_seconds)
        server_view(pg)

        banner("1. Dry-run: diagnose for real, plan the mitigation, change nothing")
        t0 = time.monotonic()
        opsctl(env, "run", "rb-006", "--dry-run", *params)
        print(f"\n(dry-run took {time.monotonic() - t0:.1f} s)")
        server_view(pg)

        banner("2. Apply option 1 (kill-long-queries) with --yes, then verify")
        t0 = time.monotonic()
        applied = opsctl(env, "run", "rb-006", "--yes", "--option", "kill-long-queries", *params)
        took = time.monotonic() - t0
        print(f"\n(exit {applied.returncode}; diagnose + mitigate + verify took {took:.1f} s; "
              "seed 002 target for RB-006 by hand: 5-10 min)")
        banner("After")
        server_view(pg)

        banner("3. Post-mortem timeline: opsctl report <run-id>")
        run_id = last_run_id(env)
        opsctl(env, "report", run_id)
        next_steps(run_id)
        return applied.returncode
    finally:
        pg.stop()


def next_steps(run_id: str) -> None:
    """Where `opsctl` comes from now, and the three commands a new user wants next."""
    banner("Next")
    print("The demo installed opsctl into ./.venv: `source .venv/bin/activate` (or use .venv/bin/opsctl);\n"
          "for daily use: `pipx install git+<this repository>` or `pip install .` (README).\n")
    print(f"  opsctl runs                                 # the demo's runs are in your run log\n"
          f"  opsctl report {run_id:<29} # the post-mortem timeline, again\n"
          "  opsctl new my-check --backend postgres      # your own runbook; then: opsctl rehearse runbooks/")


if __name__ == "__main__":
    sys.exit(main())
