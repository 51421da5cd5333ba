"""A private redis-server on a free port: no persistence, small maxmemory for cache faults."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.servers.ports import free_port

PASSWORD = "redis-s3cret-pw"



def _quietly(fn: Any, *args: Any) -> None:
    with contextlib.suppress(Exception):  # the client is killed on purpose
        fn(*args)


@dataclass
class RedisServer:
    port: int
    pid: int
    workdir: Path
    proc: subprocess.Popen[bytes]
    host: str = "127.0.0.1"
    password: str = PASSWORD

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@{self.host}:{self.port}/0"

    def client(self, **kw: Any) -> Any:
        import redis

        return redis.Redis(host=self.host, port=self.port, password=self.password,
                           decode_responses=True, socket_connect_timeout=3, **kw)

    def block_clients(self, n: int, key: str = "jobs") -> list[Any]:
        """n real clients blocked in BLPOP (each in a thread).  They do not retry once killed, so
        a killed client stays gone (redis-py's default would reconnect and block again)."""
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        before = int(self.client().info("clients")["blocked_clients"])
        clients = [self.client(socket_timeout=None, retry=Retry(NoBackoff(), 0)) for _ in range(n)]
        for c in clients:
            threading.Thread(target=_quietly, args=(c.blpop, key, 0), daemon=True).start()
        deadline = time.monotonic() + 5
        while int(self.client().info("clients")["blocked_clients"]) < before + n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{n} clients did not block on {key}")
            time.sleep(0.02)
        return clients

    def stop(self) -> None:
        try:
            os.kill(self.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_redis(maxmemory: str = "8mb", policy: str = "noeviction") -> RedisServer:
    workdir = Path(tempfile.mkdtemp(prefix="opsctl-redis-"))
    port = free_port()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
           "--dir", str(workdir), "--requirepass", PASSWORD, "--maxmemory", maxmemory,
           "--maxmemory-policy", policy, "--slowlog-log-slower-than", "10000"]
    log = open(workdir / "redis.log", "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    server = RedisServer(port=port, pid=proc.pid, workdir=workdir, proc=proc)
    deadline = time.monotonic() + 10
    while True:
        try:
            server.client().ping()
            return server
        except Exception as e:
            if time.monotonic() > deadline or proc.poll() is not None:
                server.stop()
                log_text = (workdir / "redis.log").read_text()
                raise RuntimeError(f"redis-server did not start: {log_text}") from e
            time.sleep(0.05)
