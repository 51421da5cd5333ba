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

from opsctl.testing.ports import free_port
from opsctl.testing.unavailable import Unavailable

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

    def reset(self) -> None:
        """Back to a clean server: other clients killed, no keys, stats and slowlog reset,
        noeviction with a 4 MB maxmemory."""
        client = self.client()
        own = client.client_id()
        for c in client.client_list():
            if int(c["id"]) != own:
                client.client_kill_filter(_id=int(c["id"]))
        client.flushall()
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", "4mb")
        client.config_resetstat()
        client.slowlog_reset()
        client.close()

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

    def fill_to_maxmemory(self, prefix: str = "cache:", value_size: int = 4096,
                          ttl: int | None = None) -> int:
        """Fault: write keys (``prefix`` + n, ``value_size`` bytes each) until the server refuses a
        write (OOM under ``noeviction``) or, with an evicting policy, until used memory reaches
        maxmemory; returns how many keys were written."""
        import redis

        client = self.client()
        limit = int(client.config_get("maxmemory")["maxmemory"]) or 64 * 1024 * 1024
        value, n = "x" * value_size, 0
        try:
            while True:
                pipe = client.pipeline(transaction=False)
                for i in range(n, n + 100):
                    pipe.set(f"{prefix}{i}", value, ex=ttl)
                pipe.execute()
                n += 100
                if int(client.info("memory")["used_memory"]) >= limit or n * value_size > 4 * limit:
                    return n
        except redis.ResponseError as e:  # OutOfMemoryError is one
            if not isinstance(e, redis.exceptions.OutOfMemoryError) and "maxmemory" not in str(e):
                raise
            return n
        finally:
            client.close()

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


def redis_available() -> str | None:
    """None when a private redis-server can be started here, else why not (a skip reason)."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (apt-get install redis-server)"
    return None


def start_redis(maxmemory: str = "8mb", policy: str = "noeviction") -> RedisServer:
    """redis-server on a free port, password, no persistence; Unavailable when not installed."""
    reason = redis_available()
    if reason:
        raise Unavailable(reason)
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
