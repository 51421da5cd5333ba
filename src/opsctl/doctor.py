"""`opsctl doctor [--env NAME]`: is this environment ready for the shipped runbooks?

Every backend the environment configures (its section in opsctl.yaml, else the standard variables:
libpq / DATABASE_URL, REDIS_URL, KAFKA_BOOTSTRAP_SERVERS, the AWS chain, KUBECONFIG) is probed in
parallel by ``opsctl.backends.health``: the protocol answers, the credentials are accepted, the
version, and the calls the shipped diagnoses make that would be refused.  One deadline bounds the
whole check: a probe still running at the deadline (a server that accepts and never answers, past its
client's own timeouts) is reported as "no answer" and left behind (daemon thread): a hang costs the
deadline, not more.

Exit code: 4 when a configured backend is unreachable, refuses the credentials, does not answer or is
misconfigured; else 1 when a permission a diagnosis needs is missing; else 0.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from opsctl.backends.health import Probe
from opsctl.errors import ExitCode, mask

BACKENDS = ("postgres", "redis", "kafka", "aws", "kubernetes", "prometheus")
DEFAULT_DEADLINE = 5.0
_ACTION = re.compile(r"^\s*action:\s*['\"]?(postgres|redis|kafka|aws|k8s|prometheus)\.", re.M)
_ID = re.compile(r"^id:\s*['\"]?(rb-[0-9]+)", re.M)


def runbooks_using() -> dict[str, list[str]]:
    """backend -> ids of the runbooks (the catalogue: ./runbooks, OPSCTL_RUNBOOK_PATH, shipped) whose
    steps call it, read from the files' text (no validation: doctor stays fast)."""
    from opsctl.catalog import runbook_files

    out: dict[str, set[str]] = {b: set() for b in BACKENDS}
    for path in runbook_files():
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")[:200_000]
        except OSError:
            continue
        found = _ID.search(text)
        for prefix in set(_ACTION.findall(text)):
            out["kubernetes" if prefix == "k8s" else prefix].add(found.group(1) if found else Path(path).stem)
    return {b: sorted(ids) for b, ids in out.items()}


def _probe(backend: str, cfg: dict[str, Any], timeout: float, namespace: str) -> Probe:
    from opsctl.backends import health

    if backend == "kubernetes":
        return health.kubernetes(cfg, timeout, namespace)
    probes = {"postgres": health.postgres, "redis": health.redis, "kafka": health.kafka,
              "aws": health.aws, "prometheus": health.prometheus}
    return probes[backend](cfg, timeout)


def check(environment: Any, deadline: float = DEFAULT_DEADLINE) -> tuple[int, list[Probe], float]:
    """(exit code, one Probe per backend, seconds taken) for one environment."""
    from opsctl.signals import sigint_blocked

    t0 = time.monotonic()
    namespace = str(environment.settings.get("namespace") or "default")
    # each client's own timeouts end a little before the deadline, so that a slow answer is still
    # reported with its own reason; the deadline itself catches what ignores them
    per_call = max(0.5, deadline * 0.8)
    results: dict[str, Probe] = {}
    done: queue.Queue[str] = queue.Queue()
    started: list[str] = []
    for backend in BACKENDS:
        cfg = environment.backend(backend)
        from opsctl.backends.health import configured

        if not configured(backend, cfg):
            results[backend] = Probe(backend, status="not_configured",
                                     detail="no section in the environment and no standard variable")
            continue

        def work(b: str = backend, c: dict[str, Any] = cfg) -> None:
            try:
                results[b] = _probe(b, c, per_call, namespace)
            except Exception as e:  # a probe's bug must not take the table down
                results[b] = Probe(b, status="unreachable", detail=f"{b}: {type(e).__name__}: {e}")
            finally:
                done.put(b)

        with sigint_blocked():
            threading.Thread(target=work, name=f"doctor-{backend}", daemon=True).start()
        started.append(backend)
    end = t0 + deadline
    waiting = set(started)
    while waiting:
        left = end - time.monotonic()
        if left <= 0:
            break
        try:
            waiting.discard(done.get(timeout=left))
        except queue.Empty:
            break
    for backend in waiting:
        results[backend] = Probe(backend, status="timed_out",
                                 detail=f"{backend}: no answer within the deadline ({deadline:g}s): the "
                                        "server accepts connections but does not answer, or the "
                                        "network drops the packets")
    probes = [results[b] for b in BACKENDS]
    return exit_code(probes), probes, time.monotonic() - t0


def exit_code(probes: list[Probe]) -> int:
    if any(p.status in ("unreachable", "denied", "timed_out", "misconfigured") for p in probes):
        return ExitCode.BACKEND
    if any(p.status == "permission_gap" for p in probes):
        return ExitCode.FAILED
    return ExitCode.OK


def document(environment: Any, code: int, probes: list[Probe], took: float) -> dict[str, Any]:
    using = runbooks_using()
    rows = []
    for p in probes:
        row = asdict(p)
        row["detail"] = mask(row["detail"])
        row["runbooks"] = using.get(p.backend, [])
        rows.append(row)
    return {"environment": environment.name, "source": environment.source, "exit_code": code,
            "duration": round(took, 3), "backends": rows}
