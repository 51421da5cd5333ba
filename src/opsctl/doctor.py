"""`opsctl doctor [--env NAME]`: is this environment ready for the shipped runbooks?

Every backend the environment configures (its section in opsctl.yaml, else the standard variables:
libpq / DATABASE_URL, REDIS_URL, KAFKA_BOOTSTRAP_SERVERS, the AWS chain, KUBECONFIG) is probed in
parallel by ``opsctl.backends.health``: the protocol answers, the credentials are accepted, the
version, and the calls the shipped diagnoses make that would be refused.  One deadline bounds the
whole check: a probe still running at the deadline (a server that accepts and never answers, past its
client's own timeouts) is reported as "no answer" and ended: a hang costs the deadline, not more.

Where the platform can fork (and nothing else runs threads), each probe runs in a forked process:
most of a probe's cost is CPU (importing its client library, building clients: kubernetes' models,
botocore's service models, kafka-python's protocol classes), which threads would serialise on the
GIL; processes spread it over the cores.  A probe still running at the deadline is killed.  Elsewhere
the probes run in threads (a hung one is left behind as a daemon thread).

Exit code: 4 when a configured backend is unreachable, refuses the credentials, does not answer or is
misconfigured; else 1 when a permission a diagnosis needs is missing; else 0.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import queue
import re
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
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
    from opsctl.backends.health import configured

    t0 = time.monotonic()
    namespace = str(environment.settings.get("namespace") or "default")
    # each client's own timeouts end a little before the deadline, so that a slow answer is still
    # reported with its own reason; the deadline itself catches what ignores them
    per_call = max(0.5, deadline * 0.8)
    results: dict[str, Probe] = {}
    jobs: dict[str, Callable[[], Probe]] = {}
    for backend in BACKENDS:
        cfg = environment.backend(backend)
        if not configured(backend, cfg):
            results[backend] = Probe(backend, status="not_configured",
                                     detail="no section in the environment and no standard variable")
            continue
        jobs[backend] = functools.partial(_safe_probe, backend, cfg, per_call, namespace)
    forking = hasattr(os, "fork") and threading.active_count() == 1
    results.update((_in_processes if forking else _in_threads)(jobs, t0 + deadline))
    for backend in jobs:
        if backend not in results:
            results[backend] = Probe(backend, status="timed_out",
                                     detail=f"{backend}: no answer within the deadline ({deadline:g}s): the "
                                            "server accepts connections but does not answer, or the "
                                            "network drops the packets")
    probes = [results[b] for b in BACKENDS]
    return exit_code(probes), probes, time.monotonic() - t0


def _safe_probe(backend: str, cfg: dict[str, Any], timeout: float, namespace: str) -> Probe:
    try:
        return _probe(backend, cfg, timeout, namespace)
    except Exception as e:  # a probe's bug must not take the table down
        return Probe(backend, status="unreachable", detail=f"{backend}: {type(e).__name__}: {e}")


def _in_threads(jobs: dict[str, Callable[[], Probe]], end: float) -> dict[str, Probe]:
    """Each job in a daemon thread; the ones done by ``end`` (time.monotonic())."""
    from opsctl.signals import sigint_blocked

    results: dict[str, Probe] = {}
    done: queue.Queue[str] = queue.Queue()

    def work(backend: str, job: Callable[[], Probe]) -> None:
        try:
            results[backend] = job()
        finally:
            done.put(backend)

    for backend, job in jobs.items():
        with sigint_blocked():
            threading.Thread(target=work, args=(backend, job), name=f"doctor-{backend}", daemon=True).start()
    waiting = set(jobs)
    while waiting and (left := end - time.monotonic()) > 0:
        try:
            waiting.discard(done.get(timeout=left))
        except queue.Empty:
            break
    return {b: p for b, p in list(results.items()) if b not in waiting}


def _in_processes(jobs: dict[str, Callable[[], Probe]], end: float) -> dict[str, Probe]:
    """Each job in a forked process that writes its Probe (JSON) to a pipe; the ones whose answer
    is complete by ``end``; every child is killed (if still running) and reaped before returning."""
    sys.stdout.flush()
    sys.stderr.flush()
    children: dict[int, tuple[str, int, list[bytes]]] = {}  # read fd -> (backend, pid, chunks)
    results: dict[str, Probe] = {}
    try:
        for backend, job in jobs.items():
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: one probe, its answer, and out without the parent's exit handlers
                try:
                    os.close(read_fd)
                    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends it quietly
                    data = json.dumps(asdict(job())).encode()
                    with os.fdopen(write_fd, "wb") as pipe:
                        pipe.write(data)
                finally:
                    os._exit(0)
            os.close(write_fd)
            children[read_fd] = (backend, pid, [])
        reading = set(children)
        while reading and (left := end - time.monotonic()) > 0:
            ready, _, _ = select.select(list(reading), [], [], left)
            for fd in ready:
                backend, _, chunks = children[fd]
                chunk = os.read(fd, 65536)
                if chunk:
                    chunks.append(chunk)
                    continue
                reading.discard(fd)
                try:
                    results[backend] = Probe(**json.loads(b"".join(chunks)))
                except (ValueError, TypeError):
                    results[backend] = Probe(backend, status="unreachable",
                                             detail=f"{backend}: the probe ended without an answer")
    finally:
        for fd, (_, pid, _) in children.items():
            with contextlib.suppress(OSError):
                os.close(fd)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)  # harmless on a child that already exited (a zombie)
            with contextlib.suppress(OSError):
                os.waitpid(pid, 0)
    return results


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
