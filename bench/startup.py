"""How much `opsctl --help` and `opsctl validate` save by importing backend clients lazily.

Prints, from one run: the median wall time of `opsctl --help`, of `opsctl validate runbooks/`, and
of a bare `python -c "import boto3, kubernetes, psycopg, redis, kafka"`, and their ratios.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNS = 7


def median_seconds(cmd: list[str]) -> float:
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    py = sys.executable
    help_t = median_seconds([py, "-m", "opsctl", "--help"])
    validate_t = median_seconds([py, "-m", "opsctl", "validate", "runbooks"])
    clients_t = median_seconds([py, "-c", "import boto3, kubernetes, psycopg, redis, kafka"])
    print(f"opsctl --help            {help_t * 1000:7.0f} ms")
    print(f"opsctl validate runbooks {validate_t * 1000:7.0f} ms")
    print(f"import backend clients   {clients_t * 1000:7.0f} ms  (what an eager import would add)")
    print(f"ratio: --help would be {(help_t + clients_t) / help_t:.1f}x slower with eager imports; "
          f"validate {(validate_t + clients_t) / validate_t:.1f}x")


if __name__ == "__main__":
    main()
