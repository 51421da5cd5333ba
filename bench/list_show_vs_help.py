"""`opsctl list` and `opsctl show` against `opsctl --help`, side by side (issue 15: within 1.5x).

    .venv/bin/python bench/list_show_vs_help.py [--rounds 7]

Runs the three commands alternately, each as a fresh process, `--rounds` times, with a private
cache directory, and prints the medians (wall clock and CPU of the child: on a shared machine the
wall clock mostly measures the other tenants) and the ratios to `--help`.

`list` and `show` validate what they print: an unchanged runbook's verdict comes from `opsctl
validate`'s content-hash cache (keyed by the file, opsctl's own sources and the libraries), so
the steady state is measured after one filling run; that first run (cold: every runbook checked
with the engine) is printed too.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    opsctl = [sys.executable, "-m", "opsctl"]
    cmds = {"--help": [*opsctl, "--help"], "list": [*opsctl, "list"],
            "show rb-006": [*opsctl, "show", "rb-006"]}
    with tempfile.TemporaryDirectory(prefix="opsctl-bench-") as tmp:
        env = {**os.environ, "OPSCTL_CACHE_DIR": str(Path(tmp) / "cache"),
               "OPSCTL_STATE_DIR": str(Path(tmp) / "state"), "COLUMNS": "120"}
        cold = timed(cmds["list"], env)
        print(f"first list (cold cache: every runbook checked): wall {cold[0]:.2f}s, CPU {cold[1]:.2f}s")
        runs: dict[str, list[tuple[float, float]]] = {k: [] for k in cmds}
        for _ in range(args.rounds):
            for name, cmd in cmds.items():
                runs[name].append(timed(cmd, env))
    wall = {k: statistics.median(w for w, _ in v) for k, v in runs.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in runs.items()}
    print(f"median of {args.rounds} rounds, load average {os.getloadavg()[0]:.1f}:")
    for k in cmds:
        print(f"  {k:12s} wall {wall[k]:6.3f}s  CPU {cpu[k]:6.3f}s  "
              f"ratio to --help: wall {wall[k] / wall['--help']:.2f}x, CPU {cpu[k] / cpu['--help']:.2f}x")


if __name__ == "__main__":
    main()
