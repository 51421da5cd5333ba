"""Mutating redis.* actions, each with a live plan: set / delete keys, kill clients, CONFIG SET."""

from __future__ import annotations

from typing import Any

from opsctl.actions import register
from opsctl.actions.base import is_template, type_schema
from opsctl.actions.needs import RedisAcl
from opsctl.actions.redis.common import CLIENT_FILTERS, CONNECT, RedisAction, _client_matches
from opsctl.backends import redis as rb
from opsctl.errors import ActionError, ArgumentError
from opsctl.records import Change, Plan

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
    permissions = (CONNECT, RedisAcl(("type", "get"), keys="{key}"),
                   RedisAcl(("watch", "multi", "set", "exec"), keys="{key}", apply=True))
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
        key, new, before = self.args["key"], self._value(), plan.data.get("before")
        done = self.call(lambda c: rb.set_if_unchanged(c, key, before, new, self.args.get("ttl")))
        if done == "changed":
            raise ActionError(f"{self.name}: {key} changed since the plan; re-run")
        if done == "raced":
            raise ActionError(f"{self.name}: {key} changed while applying; re-run")
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
    permissions = (CONNECT, RedisAcl(("type", "get"), keys="{keys}"),
                   RedisAcl(("del",), keys="{keys}", apply=True))
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
    permissions = (CONNECT, RedisAcl(("client|id", "client|list")),
                   RedisAcl(("client|kill",), apply=True))
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
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}


def memory_bytes(value: str) -> int | None:
    """A Redis memory value ("2gb", "512mb", "1000000", units as redis.conf reads them) in bytes."""
    import re

    m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _UNITS:
        return None
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


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
    permissions = (CONNECT, RedisAcl(("config|get", "info")),
                   RedisAcl(("config|set",), apply=True))
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
        warnings = self._policy_warnings(new) if param == "maxmemory-policy" else []
        if param == "maxmemory":
            warnings = self._maxmemory_guard(str(old), new)
            new = str(memory_bytes(new))
        if old == new:
            return Plan(summary=f"{param} is already {new}", warnings=warnings)
        return Plan(summary=f"CONFIG SET {param}", data={"before": old}, warnings=warnings,
                    changes=[Change(target=f"config {param}", operation="config set", before=old, after=new,
                                    detail="runtime only (not written to redis.conf)")])

    def _maxmemory_guard(self, old: str, new: str) -> list[str]:
        """maxmemory is only ever raised here: a lower limit evicts (or fails writes) at once."""
        wanted, before = memory_bytes(new), int(old or 0)
        if wanted is None or wanted <= 0 or wanted >= 1 << 63:  # bad input (exit 2), not a refusal
            raise ArgumentError(f"maxmemory {new!r} is not a memory size (bytes, or e.g. 512mb, 2gb"
                                + (", under 8 EiB)" if wanted else ")"))
        info = self.call(lambda c: c.info("memory"))
        used, system = int(info.get("used_memory", 0)), int(info.get("total_system_memory", 0))
        if before and wanted <= before:
            raise ActionError(f"maxmemory {new} ({wanted} bytes) does not raise the current limit of "
                              f"{before} bytes: lowering it evicts or fails writes at once")
        if wanted <= used:
            raise ActionError(f"maxmemory {new} ({wanted} bytes) is under the {used} bytes in use")
        if system and wanted > system:
            return [f"maxmemory {new} is more than the host's {system} bytes of memory: the kernel may "
                    "kill redis (OOM) before it evicts; persist the change in redis.conf / the parameter "
                    "group only once sized"]
        return [f"memory in use {used} bytes: {round(100.0 * used / wanted, 1)}% of the new limit; "
                "runtime only (persist it in redis.conf / the parameter group)"]

    def _policy_warnings(self, policy: str) -> list[str]:
        """A volatile-* policy evicts only keys that have a TTL: on a cache whose keys have none,
        it evicts nothing and writes keep failing with OOM once memory is full."""
        if not policy.startswith("volatile-"):
            return []
        info = self.call(lambda c: c.info("keyspace"))
        keys = sum(int(v.get("keys", 0)) for v in info.values() if isinstance(v, dict))
        with_ttl = sum(int(v.get("expires", 0)) for v in info.values() if isinstance(v, dict))
        if keys and not with_ttl:
            return [f"{policy} evicts only keys with a TTL, and none of the {keys} keys has one: it will "
                    "evict nothing, and writes keep failing with OOM while memory is full "
                    "(allkeys-lru evicts any key)"]
        if keys and with_ttl < keys:
            return [f"{policy} evicts only keys with a TTL: {with_ttl} of {keys} keys have one; "
                    "the rest can never be evicted"]
        return []

    def apply(self, plan: Plan) -> dict[str, Any]:
        param, new = self.args["parameter"], str(self.args["value"])
        if param == "maxmemory":
            new = str(memory_bytes(new))
        self.call(lambda c: c.config_set(param, new))
        after = self.call(lambda c: c.config_get(param)).get(param)
        return {"parameter": param, "before": plan.data.get("before"), "after": after}
