"""What every redis.* action shares: the client from the run's cache, error mapping, client filters."""

from __future__ import annotations

from typing import Any

from opsctl.actions.base import Action
from opsctl.actions.needs import RedisAcl
from opsctl.backends import redis as rb


class RedisAction(Action):
    backend = "redis"

    def _settings(self) -> rb.RedisSettings:
        return self.ctx.client("redis:settings", lambda: rb.settings_from(self.ctx.backend_config("redis")))

    def call(self, fn: Any) -> Any:
        """Run fn(client) with redis errors mapped to opsctl errors."""
        settings = self._settings()
        client = rb.client_for(self.ctx, settings)
        with rb.errors(settings):
            return fn(client)


def _hit_rate(hits: int, misses: int) -> float | None:
    return round(100.0 * hits / (hits + misses), 2) if hits + misses else None


CLIENT_FILTERS: dict[str, Any] = {
    "blocked": {"type": "boolean", "description": "only clients blocked in BLPOP/BRPOP/XREAD..."},
    "min_idle_seconds": {"type": "integer", "minimum": 0},
    "name": {"type": "string", "description": "glob on the client name"},
    "addr": {"type": "string", "description": "glob on ip:port"},
    "cmd": {"type": "string", "description": "last command (blpop, subscribe...)"},
}


def _client_matches(c: dict[str, Any], args: dict[str, Any]) -> bool:
    from fnmatch import fnmatchcase

    if args.get("blocked") is not None and c["blocked"] != args["blocked"]:
        return False
    if c["idle"] < int(args.get("min_idle_seconds", 0)):
        return False
    if args.get("name") and not fnmatchcase(c["name"], args["name"]):
        return False
    if args.get("addr") and not fnmatchcase(c["addr"], args["addr"]):
        return False
    return not (args.get("cmd") and c["cmd"].lower() != str(args["cmd"]).lower())


# redis-py names its connection (CLIENT SETNAME) as it opens it: every action needs it
CONNECT = RedisAcl(("client|setname",))


# redis-py names its connection (CLIENT SETNAME) as it opens it: every action needs it
CONNECT = RedisAcl(("client|setname",))
