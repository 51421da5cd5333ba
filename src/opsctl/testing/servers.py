"""The servers a rehearsal runs against (``opsctl rehearse``: started on first use, stopped at the
end), the environment an ``opsctl run`` under rehearsal gets (the kit's servers only), and how a
server is cleared between rehearsals."""

from __future__ import annotations

import contextlib
import os
from typing import Any

from opsctl.testing.unavailable import Unavailable


class LocalServers:
    """Starts each kind of server on first use (for ``opsctl rehearse``); ``stop_all()`` ends them."""

    def __init__(self) -> None:
        self.started: dict[str, Any] = {}
        self.unavailable: dict[str, str] = {}
        self._stops: list[Any] = []

    def get(self, kind: str) -> Any:
        if kind in self.unavailable:
            raise Unavailable(self.unavailable[kind])
        if kind not in self.started:
            try:
                self.started[kind] = self._start(kind)
            except Unavailable as e:
                self.unavailable[kind] = str(e)
                raise
        return self.started[kind]

    def _start(self, kind: str) -> Any:
        if kind == "postgres":
            from opsctl.testing.postgres import start_postgres

            pg = start_postgres(max_connections=20)
            self._stops.append(pg.stop)
            return pg
        if kind == "redis":
            from opsctl.testing.redis import start_redis

            rds = start_redis(maxmemory="4mb", policy="noeviction")
            self._stops.append(rds.stop)
            return rds
        if kind == "kafka":
            from opsctl.testing.kafka import BrokerPool

            pool = BrokerPool()
            self._stops.append(pool.stop_all)
            try:
                return pool.get("noida")
            except Unavailable:
                return pool.get("tansu")
        if kind == "aws":
            from opsctl.testing.aws import moto_process

            ctx = moto_process()
            moto = ctx.__enter__()
            self._stops.append(lambda: ctx.__exit__(None, None, None))
            return moto
        raise ValueError(kind)

    def stop_all(self) -> None:
        for stop in reversed(self._stops):
            with contextlib.suppress(Exception):  # stopping the others matters more
                stop()
        self._stops.clear()
        self.started.clear()


def server_env(kind: str, server: Any) -> dict[str, str]:
    if kind == "postgres":
        return {**server.env("ops"), "PGCONNECT_TIMEOUT": "10"}
    if kind == "redis":
        return {"REDIS_URL": server.url}
    if kind == "kafka":
        return dict(server.env)
    if kind == "aws":
        return dict(server.env)
    return {}


_SCRUB = ("PG", "DATABASE_URL", "REDIS_URL", "KAFKA_", "AWS_", "KUBECONFIG", "OPSCTL_")


def isolated_env(extra: dict[str, str], state_dir: str) -> dict[str, str]:
    """The caller's environment without any way to a real system, plus the kit's servers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
    nowhere = os.path.join(state_dir, "nowhere")
    env.update({"AWS_CONFIG_FILE": nowhere, "AWS_SHARED_CREDENTIALS_FILE": nowhere,
                "AWS_EC2_METADATA_DISABLED": "true", "KUBECONFIG": nowhere, "PGSERVICEFILE": nowhere,
                "PGPASSFILE": nowhere, "OPSCTL_STATE_DIR": state_dir,
                "XDG_CONFIG_HOME": os.path.join(state_dir, "config"), "NO_COLOR": "1", "COLUMNS": "200"})
    env.update(extra)
    return env



def clear(kind: str, servers: Any) -> None:
    """Undo every fault of a rehearsal on a server (the next rehearsal starts clean)."""
    try:
        server = servers.get(kind)
    except Unavailable:
        return
    try:
        if kind == "postgres":
            server.clear_faults()
            server.sql("ALTER ROLE app IN DATABASE app RESET ALL")
            server.sql("ALTER ROLE app RESET ALL")
        elif kind == "redis" or kind == "aws":
            server.reset()
    except Exception:  # noqa: BLE001 - a server that went away: the next rehearsal says so
        pass
