"""Redis actions: INFO (memory, hit rate, evictions, clients, replication), slowlog, clients, big keys
(read-only); set / delete keys, kill clients, CONFIG SET (mutating, with live plans)."""

from __future__ import annotations

from typing import Any

from opsctl.actions import register
from opsctl.actions.base import Action, is_template, type_schema
from opsctl.backends import redis as rb
from opsctl.errors import ActionError
from opsctl.records import Change, Plan


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


@register
class Info(RedisAction):
    """INFO parsed: memory used vs maxmemory, hit rate, evictions, clients, replication role.
    With `sample_seconds`, the hit rate and evictions are measured over that window (what is
    happening now) instead of since the server started.

    ```yaml
    - id: info
      action: redis.info
      with: {sample_seconds: 5}
      expect:
        - that: "result.hit_rate_pct is none or result.hit_rate_pct >= 95"
          message: "hit rate {{ result.hit_rate_pct }}%"
        - that: "result.memory_pct is none or result.memory_pct < 80"
          message: "memory at {{ result.memory_pct }}% of maxmemory"
    ```
    """

    name = "redis.info"
    summary = "Memory vs maxmemory, hit rate, evictions, clients, replication role"
    schema = type_schema({"sample_seconds": {"type": "number", "minimum": 0, "maximum": 300, "default": 0}})

    def run(self) -> dict[str, Any]:
        window = float(self.args.get("sample_seconds", 0))
        first = self.call(lambda c: c.info("all"))
        info = first
        if window:
            self.ctx.sleep(window)
            info = self.call(lambda c: c.info("all"))
        maxmem = int(info.get("maxmemory", 0))
        used = int(info.get("used_memory", 0))
        hits, misses = int(info.get("keyspace_hits", 0)), int(info.get("keyspace_misses", 0))
        d_hits = hits - int(first.get("keyspace_hits", 0))
        d_misses = misses - int(first.get("keyspace_misses", 0))
        keys = sum(int(v.get("keys", 0)) for k, v in info.items()
                   if k.startswith("db") and isinstance(v, dict))
        return {
            "used_memory": used, "used_memory_human": info.get("used_memory_human"), "maxmemory": maxmem,
            "memory_pct": round(100.0 * used / maxmem, 1) if maxmem else None,
            "maxmemory_policy": info.get("maxmemory_policy"),
            "keyspace_hits": hits, "keyspace_misses": misses,
            "hit_rate_pct": _hit_rate(d_hits, d_misses) if window else _hit_rate(hits, misses),
            "evicted_keys": int(info.get("evicted_keys", 0)),
            "evictions_in_window": int(info.get("evicted_keys", 0)) - int(first.get("evicted_keys", 0)),
            "expired_keys": int(info.get("expired_keys", 0)), "keys": keys,
            "connected_clients": int(info.get("connected_clients", 0)),
            "blocked_clients": int(info.get("blocked_clients", 0)),
            "rejected_connections": int(info.get("rejected_connections", 0)),
            "ops_per_sec": int(info.get("instantaneous_ops_per_sec", 0)),
            "role": info.get("role"), "connected_replicas": int(info.get("connected_slaves", 0)),
            "master_link_status": info.get("master_link_status"),
            "redis_version": info.get("redis_version"), "sample_seconds": window,
        }

    @classmethod
    def summarize(cls, result: Any) -> str:
        mem = f"{result['memory_pct']}%" if result["memory_pct"] is not None else "no maxmemory"
        rate = f"{result['hit_rate_pct']}%" if result["hit_rate_pct"] is not None else "n/a"
        return (f"memory {result['used_memory_human']} ({mem}, {result['maxmemory_policy']}), "
                f"hit rate {rate}, {result['evicted_keys']} evicted, {result['connected_clients']} clients "
                f"({result['blocked_clients']} blocked), role {result['role']}")


@register
class Slowlog(RedisAction):
    """Recent SLOWLOG entries (slowest first).

    ```yaml
    - id: slowlog
      action: redis.slowlog
      with: {count: 20, min_duration_ms: 10}
    ```
    """

    name = "redis.slowlog"
    summary = "Recent slow commands from SLOWLOG"
    schema = type_schema({"count": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 20},
                          "min_duration_ms": {"type": "number", "minimum": 0, "default": 0}})

    def run(self) -> dict[str, Any]:
        raw = self.call(lambda c: (c.slowlog_get(int(self.args.get("count", 20))), c.slowlog_len()))
        floor = float(self.args.get("min_duration_ms", 0))
        entries = [{"id": e["id"], "start_time": e["start_time"],
                    "duration_ms": round(e["duration"] / 1000, 2), "command": str(e.get("command", ""))[:200],
                    "client": e.get("client_address", "")}
                   for e in raw[0] if e["duration"] / 1000 >= floor]
        entries.sort(key=lambda e: -e["duration_ms"])
        return {"entries": entries, "count": len(entries), "slowlog_len": raw[1],
                "max_duration_ms": entries[0]["duration_ms"] if entries else 0}


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


@register
class Clients(RedisAction):
    """CLIENT LIST with idle times and flags, filtered (opsctl's own connection excluded).

    ```yaml
    - id: clients
      action: redis.clients
      with: {blocked: true}
      expect:
        - that: "result.count == 0"
          severity: warning
          message: "{{ result.count }} clients blocked"
    ```
    """

    name = "redis.clients"
    summary = "Connected clients with idle time, flags, last command"
    schema = type_schema(CLIENT_FILTERS)

    def run(self) -> dict[str, Any]:
        own, raw = self.call(lambda c: (c.client_id(), c.client_list()))
        clients = [c for c in rb.parse_clients(raw) if c["id"] != own and _client_matches(c, self.args)]
        clients.sort(key=lambda c: -c["idle"])
        return {"clients": clients[:200], "count": len(clients),
                "blocked_count": sum(c["blocked"] for c in clients),
                "max_idle_seconds": max((c["idle"] for c in clients), default=0)}


@register
class BigKeys(RedisAction):
    """The largest keys by MEMORY USAGE, found with SCAN (never KEYS) and bounded by `max_scan`.

    ```yaml
    - id: bigkeys
      action: redis.bigkeys
      with: {max_scan: 10000, top: 10, min_bytes: 1048576}
    ```
    """

    name = "redis.bigkeys"
    summary = "Largest keys by MEMORY USAGE via SCAN (bounded, never KEYS)"
    schema = type_schema({"match": {"type": "string", "default": "*"},
                          "max_scan": {"type": "integer", "minimum": 1, "maximum": 1000000, "default": 10000},
                          "top": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10},
                          "min_bytes": {"type": "integer", "minimum": 0, "default": 1048576}})

    def run(self) -> dict[str, Any]:
        limit, match = int(self.args.get("max_scan", 10000)), self.args.get("match", "*")
        found: list[dict[str, Any]] = []
        scanned, cursor, truncated = 0, 0, False
        with self.ctx.progress("Scanning keys", total=limit) as bar:
            while True:
                self.ctx.check_cancelled()
                cursor, keys = self.call(lambda c, cur=cursor: c.scan(cur, match=match, count=500))
                truncated = len(keys) > limit - scanned
                keys = keys[: limit - scanned]
                scanned += len(keys)
                found += self._measure(keys)
                bar.advance(len(keys))
                if cursor == 0 or scanned >= limit:
                    break
        found.sort(key=lambda k: -k["bytes"])
        big = [k for k in found if k["bytes"] >= int(self.args.get("min_bytes", 1048576))]
        return {"top": found[: int(self.args.get("top", 10))], "scanned": scanned,
                "complete": cursor == 0 and not truncated, "big_count": len(big),
                "largest_bytes": found[0]["bytes"] if found else 0}

    def _measure(self, keys: list[str]) -> list[dict[str, Any]]:
        if not keys:
            return []

        def pipeline(c: Any) -> list[Any]:
            pipe = c.pipeline(transaction=False)
            for k in keys:
                pipe.type(k)
                pipe.memory_usage(k)
            return list(pipe.execute())

        res = self.call(pipeline)
        return [{"key": k, "type": res[2 * i], "bytes": int(res[2 * i + 1] or 0)} for i, k in enumerate(keys)]


@register
class Get(RedisAction):
    """Read one key (feature flag, circuit-breaker override): value for strings and hashes, type, TTL.

    ```yaml
    - id: flag
      action: redis.get
      with: {key: "flags:checkout:circuit_breaker"}
      outputs: {value: "result.value"}
    ```
    """

    name = "redis.get"
    summary = "Read a key: value, type, TTL"
    schema = type_schema({"key": {"type": "string", "minLength": 1}}, required=["key"])

    def run(self) -> dict[str, Any]:
        key = self.args["key"]

        def read(c: Any) -> dict[str, Any]:
            kind = c.type(key)
            value: Any = {"string": c.get, "hash": c.hgetall}.get(kind, lambda _k: None)(key)
            return {"key": key, "exists": kind != "none", "type": kind, "value": value, "ttl": c.ttl(key)}

        return self.call(read)


_MAX_VALUE = 64 * 1024


@register
class Set(RedisAction):
    """Set a string key (feature flag, circuit-breaker override), optionally with a TTL.  The plan shows
    old -> new; apply refuses if the key changed since the plan (WATCH / MULTI).

    ```yaml
    - id: open_breaker
      action: redis.set
      with: {key: "flags:checkout:circuit_breaker", value: "open", ttl: 900}
    ```
    """

    name = "redis.set"
    read_only = False
    summary = "Set a string key (flags, overrides); plan shows old -> new"
    schema = type_schema({"key": {"type": "string", "minLength": 1},
                          "value": {"type": ["string", "number", "boolean"]},
                          "ttl": {"type": "integer", "minimum": 1, "description": "seconds"}},
                         required=["key", "value"])

    def _value(self) -> str:
        v = self.args["value"]
        text = ("true" if v else "false") if isinstance(v, bool) else str(v)
        if len(text) > _MAX_VALUE:
            raise ActionError(f"{self.name}: value larger than {_MAX_VALUE} bytes; this action is for flags")
        return text

    def plan(self) -> Plan:
        key, new = self.args["key"], self._value()
        kind, old = self.call(lambda c: (c.type(key), c.get(key) if c.type(key) == "string" else None))
        if kind not in ("string", "none"):
            raise ActionError(f"{self.name}: key {key!r} holds a {kind}, not a string; refusing to overwrite")
        if old == new and "ttl" not in self.args:
            return Plan(summary=f"{key} is already {new!r}")
        ttl = f" (expires in {self.args['ttl']}s)" if "ttl" in self.args else ""
        return Plan(summary=f"set {key}", data={"before": old},
                    changes=[Change(target=f"key {key}", operation="set", before=old, after=new, detail=ttl)])

    def apply(self, plan: Plan) -> dict[str, Any]:
        import redis

        key, new, before = self.args["key"], self._value(), plan.data.get("before")

        def cas(c: Any) -> None:
            with c.pipeline() as pipe:
                pipe.watch(key)
                if pipe.get(key) != before:
                    raise ActionError(f"{self.name}: {key} changed since the plan; re-run")
                pipe.multi()
                pipe.set(key, new, ex=self.args.get("ttl"))
                pipe.execute()

        try:
            self.call(cas)
        except redis.WatchError:
            raise ActionError(f"{self.name}: {key} changed while applying; re-run") from None
        return {"key": key, "before": before, "after": new}


@register
class Delete(RedisAction):
    """Delete explicit keys (no patterns: the blast radius is the list), at most `max_keys`.

    ```yaml
    - id: clear_override
      action: redis.delete
      with: {keys: ["flags:checkout:circuit_breaker"]}
    ```
    """

    name = "redis.delete"
    read_only = False
    summary = "Delete explicit keys (no patterns); plan shows old values"
    schema = type_schema({"keys": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                          "max_keys": {"type": "integer", "minimum": 1, "default": 100}}, required=["keys"])

    def plan(self) -> Plan:
        keys = list(dict.fromkeys(self.args["keys"]))
        if len(keys) > int(self.args.get("max_keys", 100)):
            raise ActionError(f"{self.name}: {len(keys)} keys, more than "
                              f"max_keys={self.args.get('max_keys', 100)}")
        kinds = self.call(lambda c: [c.type(k) for k in keys])
        present = [(k, t) for k, t in zip(keys, kinds, strict=True) if t != "none"]
        values = self.call(lambda c: [c.get(k) if t == "string" else f"<{t}>" for k, t in present])
        return Plan(summary=f"delete {len(present)} key(s)", data={"keys": [k for k, _ in present]},
                    changes=[Change(target=f"key {k}", operation="delete", before=v, after=None)
                             for (k, _), v in zip(present, values, strict=True)])

    def apply(self, plan: Plan) -> dict[str, Any]:
        keys = plan.data.get("keys", [])
        deleted = self.call(lambda c: c.delete(*keys)) if keys else 0
        return {"deleted": int(deleted), "keys": keys}


@register
class ClientKill(RedisAction):
    """CLIENT KILL ID for the clients matching filters (never opsctl's own connection, never
    replication links unless asked), at most `max_targets`; each id is re-checked before the kill.

    ```yaml
    - id: kill_blocked
      action: redis.client_kill
      with: {blocked: true, min_idle_seconds: 30, max_targets: 50}
    ```
    """

    name = "redis.client_kill"
    read_only = False
    summary = "Kill clients matching filters (blast radius: max_targets)"
    schema = type_schema({**CLIENT_FILTERS, "include_replication": {"type": "boolean", "default": False},
                          "max_targets": {"type": "integer", "minimum": 1, "default": 20}})

    @classmethod
    def validate_args(cls, args: dict[str, Any]) -> list[tuple[str, str]]:
        if not any(k in args for k in CLIENT_FILTERS):
            return [("blocked", "select clients with blocked / min_idle_seconds / name / addr / cmd "
                                "(refusing to kill every client)")]
        return []

    def _select(self) -> list[dict[str, Any]]:
        if self.validate_args(self.args):
            raise ActionError(f"{self.name}: no filter given; refusing to kill every client")
        own, raw = self.call(lambda c: (c.client_id(), c.client_list()))
        return [c for c in rb.parse_clients(raw) if c["id"] != own and c["name"] != "opsctl"
                and (self.args.get("include_replication") or not c["replication"])
                and _client_matches(c, self.args)]

    def plan(self) -> Plan:
        targets = self._select()
        limit = int(self.args.get("max_targets", 20))
        if len(targets) > limit:
            raise ActionError(f"{self.name}: {len(targets)} clients match, more than max_targets={limit}")
        return Plan(summary=f"kill {len(targets)} client(s)", data={"ids": [c["id"] for c in targets]},
                    changes=[Change(target=f"client {c['id']} {c['addr']}", operation="kill",
                                    before=f"{c['cmd']} idle {c['idle']}s flags={c['flags']} "
                                           f"name={c['name'] or '-'}",
                                    after="disconnected",
                                    state={"addr": c["addr"], "name": c["name"]}) for c in targets])

    def apply(self, plan: Plan) -> dict[str, Any]:
        # Client ids are never reused, so an id that still matches is the same connection.
        still = {c["id"] for c in self._select()}
        killed, skipped = [], []
        for cid in plan.data.get("ids", []):
            self.ctx.check_cancelled()
            if cid in still and self.call(lambda c, i=cid: c.execute_command("CLIENT KILL ID", i)):
                killed.append(cid)
            else:
                skipped.append(cid)
        return {"killed": killed, "killed_count": len(killed), "skipped": skipped}


_CONFIG_ALLOWED = {"maxmemory-policy", "maxmemory", "maxmemory-samples", "timeout", "maxclients",
                   "slowlog-log-slower-than", "slowlog-max-len", "lazyfree-lazy-eviction", "activedefrag",
                   "hz", "lfu-decay-time", "lfu-log-factor"}
_POLICIES = {"noeviction", "allkeys-lru", "allkeys-lfu", "allkeys-random", "volatile-lru", "volatile-lfu",
             "volatile-random", "volatile-ttl"}


@register
class ConfigSet(RedisAction):
    """CONFIG SET one runtime parameter from an allow-list (maxmemory-policy, maxmemory, timeout...);
    the plan shows old -> new.  Not persisted to redis.conf (CONFIG REWRITE is a deliberate, separate act).

    ```yaml
    - id: lru
      action: redis.config_set
      with: {parameter: maxmemory-policy, value: allkeys-lru}
    ```
    """

    name = "redis.config_set"
    read_only = False
    summary = "CONFIG SET an allow-listed parameter (plan shows old -> new)"
    schema = type_schema({"parameter": {"type": "string", "enum": sorted(_CONFIG_ALLOWED)},
                          "value": {"type": ["string", "integer"]}}, required=["parameter", "value"])

    @classmethod
    def validate_args(cls, args: dict[str, Any]) -> list[tuple[str, str]]:
        value = args.get("value")
        if args.get("parameter") == "maxmemory-policy" and not is_template(value) and value not in _POLICIES:
            return [("value", f"unknown maxmemory-policy {value!r}; one of {', '.join(sorted(_POLICIES))}")]
        return []

    def plan(self) -> Plan:
        problems = self.validate_args(self.args)
        if problems:
            raise ActionError(f"{self.name}: {problems[0][1]}")
        param, new = self.args["parameter"], str(self.args["value"])
        old = self.call(lambda c: c.config_get(param)).get(param)
        if old == new:
            return Plan(summary=f"{param} is already {new}")
        return Plan(summary=f"CONFIG SET {param}", data={"before": old},
                    changes=[Change(target=f"config {param}", operation="config set", before=old, after=new,
                                    detail="runtime only (not written to redis.conf)")])

    def apply(self, plan: Plan) -> dict[str, Any]:
        param, new = self.args["parameter"], str(self.args["value"])
        self.call(lambda c: c.config_set(param, new))
        after = self.call(lambda c: c.config_get(param)).get(param)
        return {"parameter": param, "before": plan.data.get("before"), "after": after}
