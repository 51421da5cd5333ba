"""`opsctl doctor` when everything answers: wall and CPU time against baselines measured in the same
run, on real local servers (the kit's PostgreSQL, Redis, Kafka-protocol broker, moto in server mode,
and the kube-apiserver of scripts/k8s-cluster.sh when its binaries are installed).

    .venv/bin/python bench/doctor_latency.py [RUNS]   # 5

Measured, each in a fresh interpreter (imports are most of the cost), median of RUNS:

* ``doctor``: ``python -m opsctl doctor -o json`` (the CLI: probes in forked processes);
* ``threads``: the same CLI with the probes in threads (what doctor did before: one GIL for every
  client library's import and client construction);
* ``sequential``: the naive baseline, the same CLI with the probes one after the other;
* ``peers``: ``pg_isready`` + ``redis-cli ping`` one after the other (reachability only: no
  authentication, version or permission check; shown for scale, when on PATH).

CPU is user+sys of the process and its children (``resource.RUSAGE_CHILDREN``).  On a loaded machine
the wall times stretch; the ratios, measured in the same run, are what to read.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

# the same CLI, the probes run another way: the only difference is how they run
ARGS = ["doctor", "-o", "json", "--timeout", "30"]
VARIANT = ("import sys; import opsctl.doctor as d; d._in_processes = {}; "
           "sys.argv = ['opsctl', *sys.argv[1:]]; from opsctl.cli.main import main; main()")
THREADS = VARIANT.format("d._in_threads")
SEQUENTIAL = VARIANT.format("lambda jobs, end: {b: job() for b, job in jobs.items()}")


def measure(cmd: list[str], env: dict[str, str], runs: int) -> tuple[float, float]:
    """(median wall, median CPU) seconds of cmd; it must exit 0."""
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env=env, cwd=tempfile.gettempdir(), capture_output=True, text=True,
                              check=False)
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if done.returncode != 0:
            try:  # doctor's JSON: the rows that are not ok
                rows = [(r["backend"], r["status"], r["detail"]) for r in json.loads(done.stdout)["backends"]
                        if r["status"] not in ("ok", "not_configured")]
            except (ValueError, KeyError):
                rows = []
            raise SystemExit(f"{' '.join(cmd[:4])}... exited {done.returncode}: {rows or done.stdout[-2000:]}"
                             f"{done.stderr[-2000:]}")
    return statistics.median(walls), statistics.median(cpus)


@contextlib.contextmanager
def kubernetes() -> Iterator[dict[str, str]]:
    """KUBECONFIG of a private control plane, or {} when its binaries are not installed."""
    from opsctl.testing.ports import free_port

    home = Path(os.environ.get("K8S_HOME", Path.home() / ".cache" / "opsctl-k8s-1.20.2"))
    if not (home / "bin" / "kube-apiserver").exists():
        print(f"(no Kubernetes: binaries missing in {home}/bin, see scripts/k8s-cluster.sh install)")
        yield {}
        return
    run_dir = Path(tempfile.mkdtemp(prefix="opsctl-bench-k8s-"))
    env = {**os.environ, "K8S_HOME": str(home), "K8S_RUN": str(run_dir), "API_PORT": str(free_port()),
           "ETCD_PORT": str(free_port())}
    script = str(REPO / "scripts" / "k8s-cluster.sh")
    subprocess.run(["bash", script, "start"], env=env, check=True, capture_output=True, timeout=180)
    try:
        yield {"KUBECONFIG": str(run_dir / "kubeconfig")}
    finally:
        subprocess.run(["bash", script, "stop"], env=env, capture_output=True, timeout=60)


def main() -> None:
    from opsctl.testing.servers import LocalServers, isolated_env, server_env

    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    servers = LocalServers()
    state = tempfile.mkdtemp(prefix="opsctl-bench-doctor-")
    try:
        extra: dict[str, str] = {}
        for kind in ("postgres", "redis", "kafka", "aws"):
            extra.update(server_env(kind, servers.get(kind)))
        moto = servers.get("aws")
        for service, call in (("rds", "describe_db_clusters"), ("ecs", "list_clusters"),
                              ("lambda", "list_functions"), ("cloudwatch", "describe_alarms"),
                              ("sqs", "list_queues")):
            getattr(moto.client(service), call)()  # moto loads a service's backend on its first request
        with kubernetes() as kube:
            env = isolated_env({**extra, **kube, "HOME": state}, state)
            if not kube:
                env.pop("KUBECONFIG", None)
            py = sys.executable
            measure([py, "-m", "opsctl", *ARGS], env, 1)  # bytecode, page cache
            rows = {"doctor": measure([py, "-m", "opsctl", *ARGS], env, runs),
                    "threads": measure([py, "-c", THREADS, *ARGS], env, runs),
                    "sequential": measure([py, "-c", SEQUENTIAL, *ARGS], env, runs)}
            pg_isready, redis_cli = shutil.which("pg_isready"), shutil.which("redis-cli")
            if pg_isready and redis_cli:
                peer = (f"{pg_isready} -q && {redis_cli} -u \"$REDIS_URL\" --no-auth-warning ping >/dev/null")
                rows["peers"] = measure(["sh", "-c", peer], env, runs)
    finally:
        servers.stop_all()
        shutil.rmtree(state, ignore_errors=True)
    backends = "postgres, redis, kafka, aws" + (", kubernetes" if kube else "")
    print(f"opsctl doctor, everything answering ({backends}); median of {runs}, "
          f"load {os.getloadavg()[0]:.1f}")
    base_wall, base_cpu = rows["sequential"]
    for name, (wall, cpu) in rows.items():
        print(f"{name:11s} wall {wall:6.2f} s  cpu {cpu:6.2f} s   vs sequential: wall "
              f"{wall / base_wall:5.2f}x  cpu {cpu / base_cpu:5.2f}x")


if __name__ == "__main__":
    main()
