"""Fixture modules, one per backend; each starts its own private server on a free port.

Under pytest-xdist (`-n N --dist loadfile`, as scripts/test.sh runs it) a test module runs on one
worker (its tests share that worker's servers) while the modules spread over the workers;
session-scoped servers start once per worker that needs them, except the Kubernetes control plane:
one per run (about 450 MB), shared by the workers (tests/fixtures/k8s.py).
"""

from __future__ import annotations

import importlib.metadata
import json
import signal
from pathlib import Path

import pytest

# The servers come from the shipped rehearsal kit (opsctl.testing.plugin), registered by the
# `pytest11` entry point of the installed package; an install that predates the entry point (an old
# .venv) still gets it from here.
_REGISTERED = {e.value for e in importlib.metadata.entry_points(group="pytest11")}
_KIT = [] if "opsctl.testing.plugin" in _REGISTERED else ["opsctl.testing.plugin"]

pytest_plugins = [
    *_KIT,
    "tests.fixtures.core",
    "tests.fixtures.postgres",
    "tests.fixtures.redis",
    "tests.fixtures.aws",
    "tests.fixtures.kafka",
    "tests.fixtures.k8s",
]


# ---- the order in which xdist hands the modules out ------------------------------------------------
# With `--dist loadfile` a module runs whole on one worker, and the run ends when the last worker
# finishes: xdist's own order (most tests first) left the longest modules (the Kubernetes and SQS
# runbook rehearsals, several minutes each) to start late, alone at the end.  The modules go out
# longest first instead, by the seconds tests/module_costs.json records (scripts/test-costs.py
# writes it from a `--junitxml` report; a module it does not know counts as its number of tests
# times the median per-test time).
_COSTS = Path(__file__).parent / "module_costs.json"


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist: keep the collection's order
        config.option.loadscopereorder = False
    # Started as a background job (`./.ci/run &`: a shell without job control ignores SIGINT there),
    # the suite and every CLI it starts would inherit SIGINT ignored: a Ctrl-C sent before opsctl
    # installs its own handler was lost (the run went on, exit 0), unlike on any terminal.  The
    # CLIs under test start as they would from a terminal.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    try:
        costs: dict[str, float] = json.loads(_COSTS.read_text())
    except (OSError, ValueError):
        return
    root = Path(str(config.rootpath))
    counts: dict[str, int] = {}
    for item in items:
        module = Path(str(item.path)).relative_to(root).as_posix()
        counts[module] = counts.get(module, 0) + 1
    known = sorted(costs[m] / n for m, n in counts.items() if m in costs and costs[m] > 0)
    per_test = known[len(known) // 2] if known else 1.0

    def cost(item: pytest.Item) -> float:
        module = Path(str(item.path)).relative_to(root).as_posix()
        return costs.get(module, counts[module] * per_test)

    items.sort(key=lambda item: -cost(item))  # stable: a module's tests keep their order


# ---- a flaky test's first failure is shown, not only its name -------------------------------------
# `--reruns 1 -rR` names every test that needed a second try but keeps no traceback of the first:
# the summary below prints each such failure, so a flaky test in CI leaves what to investigate.
_RERUNS: list[pytest.TestReport] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.outcome == "rerun":  # pytest-rerunfailures marks a failed first try so
        _RERUNS.append(report)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for report in _RERUNS:
        terminalreporter.write_sep("_", f"first try of rerun test {report.nodeid} ({report.when})")
        terminalreporter.write_line(report.longreprtext)
        for title, content in report.sections:
            if title.startswith("Captured"):
                terminalreporter.write_sep("-", title)
                terminalreporter.write_line(content[-4000:])
