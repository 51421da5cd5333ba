"""Read-only redis.* actions: INFO (memory, hit rate, evictions, TTL'd keys), slowlog, clients, big
keys, one key, and a write probe (a scratch key written and deleted: can the cache take writes?)."""

from __future__ import annotations

from typing import Any

from opsctl.actions import register
from opsctl.actions.base import type_schema
from opsctl.actions.needs import RedisAcl
from opsctl.actions.redis.common import CLIENT_FILTERS, CONNECT, RedisAction, _client_matches, _hit_rate
from opsctl.backends import redis as rb


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
    permissions = (CONNECT, RedisAcl(("info",)),)
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
        with_ttl = sum(int(v.get("expires", 0)) for k, v in info.items()
                       if k.startswith("db") and isinstance(v, dict))
        policy = str(info.get("maxmemory_policy") or "")
        return {
            "used_memory": used, "used_memory_human": info.get("used_memory_human"), "maxmemory": maxmem,
            "memory_pct": round(100.0 * used / maxmem, 1) if maxmem else None,
            "maxmemory_policy": info.get("maxmemory_policy"),
            "keyspace_hits": hits, "keyspace_misses": misses,
            "hit_rate_pct": _hit_rate(d_hits, d_misses) if window else _hit_rate(hits, misses),
            "evicted_keys": int(info.get("evicted_keys", 0)),
            "evictions_in_window": int(info.get("evicted_keys", 0)) - int(first.get("evicted_keys", 0)),
            "expired_keys": int(info.get("expired_keys", 0)), "keys": keys,
            "keys_with_ttl": with_ttl,
            # what the policy may evict when memory is full: volatile-* only keys with a TTL
            "eviction_candidates": eviction_candidates(policy, keys, with_ttl),
            "under_maxmemory": (used < maxmem) if maxmem else True,
            "connected_clients": int(info.get("connected_clients", 0)),
            "maxclients": int(info.get("maxclients", 0)) or None,
            "clients_pct": round(100.0 * int(info.get("connected_clients", 0)) / int(info["maxclients"]), 1)
            if int(info.get("maxclients", 0) or 0) else None,
            # refused connections in the window (since start without one, like the hit rate)
            "rejected_in_window": int(info.get("rejected_connections", 0))
            - (int(first.get("rejected_connections", 0)) if window else 0),
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
                f"of {result['maxclients'] or '?'} ({result['blocked_clients']} blocked, "
                f"{result['rejected_connections']} rejected), role {result['role']}")


def eviction_candidates(policy: str, keys: int, with_ttl: int) -> int:
    if policy.startswith("allkeys-"):
        return keys
    if policy.startswith("volatile-"):
        return with_ttl
    return 0  # noeviction


@register
class WriteProbe(RedisAction):
    """Can the cache take writes now?  Writes one scratch key (``opsctl:probe:<random>``, with a
    60 s expiry in case the delete never arrives) and deletes it again: the only proof that writes
    no longer fail with OOM.  Read-only in effect (nothing is left behind); an OOM or a read-only
    replica is the answer (``ok: false`` with the server's error), not a failure of the step.

    ```yaml
    - id: writes_ok
      action: redis.write_probe
      with: {bytes: 1024}
      expect:
        - that: "result.ok"
          message: "writes still fail: {{ result.error }}"
    ```
    """

    name = "redis.write_probe"
    permissions = (CONNECT, RedisAcl(("set", "del"), keys="opsctl:probe:*"),)
    summary = "Write and delete a scratch key: do writes succeed (no OOM)?"
    schema = type_schema({"bytes": {"type": "integer", "minimum": 1, "maximum": 1048576, "default": 1024}})

    def run(self) -> dict[str, Any]:
        import secrets

        key = f"opsctl:probe:{secrets.token_hex(8)}"
        size = int(self.args.get("bytes", 1024))

        def probe(c: Any) -> dict[str, Any]:
            refused = rb.write_refusal(c, key, "x" * size, px=60000)
            if refused is not None:
                return {"ok": False, "error": refused}
            c.delete(key)
            return {"ok": True, "error": None}

        if self.ctx.dry_run:  # a dry-run writes nothing, not even a scratch key
            return {"ok": None, "error": "dry-run: no probe write", "key": None, "bytes": size}
        settings = self._settings()
        client = rb.client_for(self.ctx, settings, probe=True)
        with rb.errors(settings):
            out = probe(client)
        return {**out, "key": key, "bytes": size}

    @classmethod
    def summarize(cls, result: Any) -> str:
        return "a probe write succeeded (scratch key deleted)" if result["ok"] else \
            f"a probe write failed: {result['error']}"


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
    permissions = (CONNECT, RedisAcl(("slowlog|get", "slowlog|len")),)
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
    permissions = (CONNECT, RedisAcl(("client|id", "client|list")),)
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
    Measuring disturbs nothing it measures: SCAN and MEMORY USAGE do not count as keyspace hits or
    misses (TYPE, OBJECT, EXISTS, TTL do, one per key), so the hit rate dashboards and alerts read
    stays what the application made it; the key's type is therefore not reported.

    ```yaml
    - id: bigkeys
      action: redis.bigkeys
      with: {max_scan: 10000, top: 10, min_bytes: 1048576}
    ```
    """

    name = "redis.bigkeys"
    permissions = (CONNECT, RedisAcl(("scan", "type", "memory|usage"), keys="{match}"),)
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
                pipe.memory_usage(k)  # no keyspace hit (TYPE would add one per key)
            return list(pipe.execute())

        res = self.call(pipeline)
        return [{"key": k, "bytes": int(res[i] or 0)} for i, k in enumerate(keys)]


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
    permissions = (CONNECT, RedisAcl(("type", "get", "hgetall", "ttl"), keys="{key}"),)
    summary = "Read a key: value, type, TTL"
    schema = type_schema({"key": {"type": "string", "minLength": 1}}, required=["key"])

    def run(self) -> dict[str, Any]:
        key = self.args["key"]

        def read(c: Any) -> dict[str, Any]:
            kind = c.type(key)
            value: Any = {"string": c.get, "hash": c.hgetall}.get(kind, lambda _k: None)(key)
            return {"key": key, "exists": kind != "none", "type": kind, "value": value, "ttl": c.ttl(key)}

        return self.call(read)
