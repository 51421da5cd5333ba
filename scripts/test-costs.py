#!/usr/bin/env python3
"""Per-module test time from a pytest JUnit XML report (`pytest --junitxml=FILE`), and the wall time
4 xdist workers would take with `--dist loadfile` when the modules are handed out in a given order.

    scripts/test-costs.py FILE            # table: module, tests, seconds; simulated wall times
    scripts/test-costs.py FILE --write    # also write tests/module_costs.json (the conftest's order)

The seconds of a test case are its setup + call + teardown (a module's first test carries its
module fixtures).  The simulation replays xdist's LoadScopeScheduling (each worker is given two
modules, then one more whenever it finishes one) with the measured durations: a comparison of
orders, not a prediction (on a loaded machine durations depend on what runs beside them)."""

from __future__ import annotations

import heapq
import re
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def module_times(junit: Path) -> dict[str, tuple[int, float]]:
    times: dict[str, list[float]] = defaultdict(list)
    for case in ET.parse(junit).getroot().iter("testcase"):
        module = case.get("classname", "").split("::")[0]
        # classname is dotted: tests.runbooks.test_rb014[.Class]
        parts = module.split(".")
        while parts and not parts[-1].startswith("test_"):
            parts.pop()
        path = "/".join(parts) + ".py"
        times[path].append(float(case.get("time", 0)))
    return {m: (len(t), sum(t)) for m, t in times.items()}


def current_costs(junit: Path) -> dict[str, float]:
    """Seconds per test module of the tree as it is now: a test the report knows under another module
    (a module split since) counts where its function is defined now."""
    by_name: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for case in ET.parse(junit).getroot().iter("testcase"):
        parts = case.get("classname", "").split(".")
        while parts and not parts[-1].startswith("test_"):
            parts.pop()
        name = case.get("name", "").split("[")[0]
        by_name[name]["/".join(parts) + ".py"] += float(case.get("time", 0))
    costs = {}
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        module = path.relative_to(REPO).as_posix()
        total = 0.0
        for name in re.findall(r"^(?:async )?def (test_\w+)", path.read_text(), re.M):
            seen = by_name.get(name, {})
            total += seen[module] if module in seen else (sum(seen.values()) if len(seen) == 1 else 0.0)
        costs[module] = total
    return costs


def simulate(order: list[str], cost: dict[str, float], workers: int = 4) -> float:
    """Finish time of the last worker when modules are handed out in `order`."""
    queue = list(order)
    clocks: list[tuple[float, int]] = []
    pending: dict[int, list[float]] = {}
    for w in range(workers):  # two modules each to start with
        pending[w] = [cost[queue.pop(0)] for _ in range(2) if queue]
    # run: a worker works through its pending modules; when down to one, it gets another
    finish = 0.0
    for w in range(workers):
        heapq.heappush(clocks, (pending[w].pop(0) if pending[w] else 0.0, w))
    while clocks:
        t, w = heapq.heappop(clocks)
        finish = max(finish, t)
        if queue:
            pending[w].append(cost[queue.pop(0)])
        if pending[w]:
            heapq.heappush(clocks, (t + pending[w].pop(0), w))
    return finish


def main() -> None:
    junit = Path(sys.argv[1])
    times = module_times(junit)
    cost = {m: s for m, (_, s) in times.items()}
    total = sum(cost.values())
    for m, (n, s) in sorted(times.items(), key=lambda kv: -kv[1][1]):
        print(f"{s:8.1f} s {n:4d} tests  {m}")
    print(f"total {total:.0f} s of test time in {len(times)} modules; /4 = {total / 4:.0f} s")
    by_count = sorted(times, key=lambda m: -times[m][0])  # xdist's default (--loadscope-reorder)
    by_cost = sorted(times, key=lambda m: -cost[m])
    print(f"simulated wall, 4 workers: by test count (xdist default) {simulate(by_count, cost):.0f} s, "
          f"longest first {simulate(by_cost, cost):.0f} s")
    now = current_costs(junit)
    moved = {m: round(c, 1) for m, c in now.items() if abs(c - cost.get(m, 0.0)) > 0.5}
    if moved:
        print(f"modules whose tests moved since the report (seconds as the tree is now): {moved}")
        print(f"simulated wall of the tree now, longest first: "
              f"{simulate(sorted(now, key=lambda m: -now[m]), now):.0f} s")
    if "--write" in sys.argv:
        out = REPO / "tests" / "module_costs.json"
        ordered = sorted(now, key=lambda m: -now[m])
        out.write_text("{\n" + ",\n".join(f'"{m}": {now[m]:.1f}' for m in ordered) + "\n}\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
