"""Read-only guards: the clients handed to read-only code refuse to mutate, whatever that code does.

The engine marks an ``ActionContext`` read-only for read-only steps, for the ``plan()`` of mutating
steps and for everything in a dry-run (``ctx.read_only``); only ``apply()`` gets a writable context.
The backend factories then hand out a guarded client.  A guarded client is never the object handed
to ``apply()`` and the other way round: each guarded client is its own cached object (its own cache
key, or a wrapper built per action), sharing only the connection (pool) underneath, so an abandoned
read-only step that is still running cannot be "unguarded" by a later ``apply()``.

What each guard refuses, with :class:`opsctl.errors.ReadOnlyViolation` (exit 1, never retried):

* AWS: a botocore ``before-parameter-build`` hook refuses every operation outside Describe*/List*/Get*/
  BatchGet*/Head* and a few named reads; an action may allow named operations with a check of their
  parameters (``aws.sqs.peek``: ReceiveMessage, and ChangeMessageVisibility back to 0 only).
* Kubernetes: the API client refuses any HTTP method but GET (get/list/watch) and the connect
  subresources (exec, attach, portforward, proxy), before anything is sent; a write passes only as a
  server-side dry run (``dryRun=All``), with which plan() validates a change against admission.
* Redis: every command, also inside pipelines, must be on a list of read commands.
* Kafka: the admin client exposes only describe_*/list_*; no producer; consumers are group-less and
  cannot commit.
* PostgreSQL (``opsctl.backends.postgres``): sessions are READ ONLY and, where the server allows it,
  run as a role that may not signal backends; ``postgres.query`` SQL is judged on its parse tree
  (``opsctl.backends.pg_sql_guard``).

What no client-side guard can stop: code that reaches below the client (a raw socket, a connection
taken from a redis-py pool, a kubernetes ``rest_client``, botocore's endpoint), and server-side
objects that act when read (a PostgreSQL view calling a volatile function).  Those are left to review
and, for PostgreSQL, to the server-side role; the wrappers make a mistake fail loudly, they are not a
sandbox for hostile code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from opsctl.errors import ReadOnlyViolation


def _words(text: str) -> list[str]:
    return text.split()


# ---- AWS ----------------------------------------------------------------------------------------
_AWS_READ_PREFIXES = ("Describe", "List", "Get", "BatchGet", "Head")
# reads outside the prefixes above
AWS_READ_EXTRA = frozenset({"FilterLogEvents", "LookupEvents", "TestMetricFilter"})
# inside the prefixes, but they create something (credentials, users, identities)
AWS_NOT_READ = frozenset({"GetClusterCredentials", "GetClusterCredentialsWithIAM", "GetId",
                          "GetOpenIdTokenForDeveloperIdentity", "GetFederationToken"})

# An extra allowed operation: a check of its parameters that returns a refusal reason, or "".
AwsRule = Callable[[dict[str, Any]], str]


def aws_is_read(operation: str) -> bool:
    if operation in AWS_NOT_READ:
        return False
    return operation in AWS_READ_EXTRA or operation.startswith(_AWS_READ_PREFIXES)


def _any(params: dict[str, Any]) -> str:
    return ""


def _visible_again(params: dict[str, Any]) -> str:
    return "" if params.get("VisibilityTimeout") == 0 else "only VisibilityTimeout=0 (make visible again)"


def _visible_again_batch(params: dict[str, Any]) -> str:
    entries = params.get("Entries")
    if not isinstance(entries, list) or not entries:
        return "no entries"
    bad = [e.get("Id") for e in entries if not isinstance(e, dict) or e.get("VisibilityTimeout") != 0]
    return f"only VisibilityTimeout=0 (make visible again); entries {bad}" if bad else ""


# aws.sqs.peek: receive (raises the receive count, hides for the visibility timeout), then make the
# received messages visible again at once
SQS_PEEK: Mapping[str, AwsRule] = {"ReceiveMessage": _any, "ChangeMessageVisibility": _visible_again,
                                   "ChangeMessageVisibilityBatch": _visible_again_batch}


def guard_aws_client(client: Any, allow: Mapping[str, AwsRule] | None = None) -> Any:
    """Register the read-only hook on a botocore client (the client must not be handed to apply())."""
    extra = dict(allow or {})
    service = client.meta.service_model.service_name

    def check(model: Any, params: dict[str, Any], **_: Any) -> None:
        operation = model.name
        if aws_is_read(operation):
            return
        rule = extra.get(operation)
        if rule is None:
            raise ReadOnlyViolation("aws", f"{service}:{operation}")
        problem = rule(params)
        if problem:
            raise ReadOnlyViolation("aws", f"{service}:{operation}", problem)

    # before-parameter-build: the operation's own parameters (before-call sees the serialised
    # request instead); either way, before anything is sent
    client.meta.events.register("before-parameter-build", check, unique_id="opsctl-read-only-guard")
    return client


# ---- Kubernetes ---------------------------------------------------------------------------------
_K8S_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# subresources reached with GET that act on the cluster (kubectl exec/attach/port-forward/proxy)
_K8S_CONNECT = re.compile(r"/(exec|attach|portforward|proxy)(/|$|\?)")


def _k8s_check(method: str, path: str, dry_run: bool) -> None:
    """get/list/watch pass; a write passes only as a server-side dry run (``dryRun=All``: admission
    and validation run, nothing is persisted), which is how a plan() validates its change."""
    verb = (method or "").upper()
    if _K8S_CONNECT.search(path or ""):
        raise ReadOnlyViolation("kubernetes", f"{verb} {path}", "connect subresources act on the pods")
    if verb not in _K8S_READ_METHODS and not dry_run:
        raise ReadOnlyViolation("kubernetes", f"{verb} {path}",
                                "only get, list and watch (and server-side dry runs) are allowed")


def _dry_run_query(query: Any) -> bool:
    pairs = query.items() if isinstance(query, dict) else (query or [])
    return any(k == "dryRun" and v == "All" for k, v in pairs)


def read_only_api_client(configuration: Any) -> Any:
    """A kubernetes ``ApiClient`` that refuses any verb but get/list/watch (writes pass only with
    ``dryRun=All``)."""
    from urllib.parse import parse_qsl, urlsplit

    from kubernetes import client

    class ReadOnlyApiClient(client.ApiClient):  # type: ignore[misc]
        # every generated API method builds its request here (kubernetes.stream replaces
        # call_api on the instance for exec/attach, but not this), and call_api sends it
        def param_serialize(self, method: str, resource_path: str, *args: Any, **kwargs: Any) -> Any:
            query = kwargs.get("query_params", args[1] if len(args) > 1 else None)
            _k8s_check(method, resource_path, _dry_run_query(query))
            return super().param_serialize(method, resource_path, *args, **kwargs)

        def call_api(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            _k8s_check(method, url, _dry_run_query(parse_qsl(urlsplit(url).query)))
            return super().call_api(method, url, *args, **kwargs)

    return ReadOnlyApiClient(configuration)


# ---- Redis --------------------------------------------------------------------------------------
REDIS_READ_COMMANDS = frozenset(_words("""
PING ECHO TIME INFO DBSIZE LASTSAVE ROLE
EXISTS TYPE TTL PTTL EXPIRETIME PEXPIRETIME KEYS SCAN RANDOMKEY DUMP
GET MGET GETRANGE SUBSTR STRLEN GETBIT BITCOUNT BITPOS BITFIELD_RO LCS
HGET HMGET HGETALL HKEYS HVALS HLEN HEXISTS HSTRLEN HSCAN HRANDFIELD HTTL HPTTL
LLEN LRANGE LINDEX LPOS
SCARD SMEMBERS SISMEMBER SMISMEMBER SSCAN SRANDMEMBER SINTER SINTERCARD SUNION SDIFF
ZCARD ZCOUNT ZLEXCOUNT ZRANGE ZRANGEBYSCORE ZRANGEBYLEX ZREVRANGE ZREVRANGEBYSCORE ZREVRANGEBYLEX
ZRANK ZREVRANK ZSCORE ZMSCORE ZSCAN ZRANDMEMBER ZINTER ZINTERCARD ZUNION ZDIFF
XLEN XRANGE XREVRANGE XPENDING
GEOPOS GEODIST GEOHASH GEORADIUS_RO GEORADIUSBYMEMBER_RO GEOSEARCH
SORT_RO WATCH UNWATCH
"""))
# container commands: only these subcommands read
REDIS_READ_SUBCOMMANDS: Mapping[str, frozenset[str]] = {
    "CLIENT": frozenset({"LIST", "INFO", "GETNAME", "ID", "TRACKINGINFO", "GETREDIR"}),
    "CONFIG": frozenset({"GET"}),
    "MEMORY": frozenset({"USAGE", "STATS", "DOCTOR", "MALLOC-STATS"}),
    "OBJECT": frozenset({"ENCODING", "FREQ", "IDLETIME", "REFCOUNT"}),
    "SLOWLOG": frozenset({"GET", "LEN"}),
    "LATENCY": frozenset({"LATEST", "HISTORY", "DOCTOR", "GRAPH", "HISTOGRAM"}),
    "CLUSTER": frozenset({"INFO", "NODES", "SLOTS", "SHARDS", "MYID", "KEYSLOT", "COUNTKEYSINSLOT"}),
    "ACL": frozenset({"WHOAMI", "LIST", "USERS", "GETUSER", "CAT"}),
    "PUBSUB": frozenset({"CHANNELS", "NUMSUB", "NUMPAT", "SHARDCHANNELS", "SHARDNUMSUB"}),
    "COMMAND": frozenset({"", "COUNT", "INFO", "DOCS", "LIST", "GETKEYS"}),
    "XINFO": frozenset({"STREAM", "GROUPS", "CONSUMERS"}),
    "FUNCTION": frozenset({"LIST", "STATS", "DUMP"}),
    "SCRIPT": frozenset({"EXISTS"}),
    "MODULE": frozenset({"LIST"}),
}


def redis_command_name(args: tuple[Any, ...]) -> str:
    """``CONFIG SET`` from ('CONFIG SET', ...) or ('CONFIG', 'SET', ...), upper-case."""
    def text(a: Any) -> str:
        return a.decode("utf-8", "replace") if isinstance(a, bytes | bytearray) else str(a)

    words = text(args[0]).upper().split() if args else [""]
    if len(words) == 1 and words[0] in REDIS_READ_SUBCOMMANDS and len(args) > 1:
        words.append(text(args[1]).upper())
    return " ".join(words[:2])


def redis_check(args: tuple[Any, ...]) -> None:
    name = redis_command_name(args)
    head, _, sub = name.partition(" ")
    if head in REDIS_READ_SUBCOMMANDS:
        if sub in REDIS_READ_SUBCOMMANDS[head]:
            return
    elif head in REDIS_READ_COMMANDS:
        return
    raise ReadOnlyViolation("redis", name or "(empty command)")


def read_only_redis(writable: Any, allow: Callable[[tuple[Any, ...]], bool] | None = None) -> Any:
    """A redis-py client on the same connection pool whose commands (pipelines included) must be
    reads; pub/sub and MONITOR are refused.  ``allow`` admits named writes with a check of their
    arguments (redis.write_probe: SET/DEL of its own ``opsctl:probe:*`` scratch key only)."""
    import redis
    from redis.client import Pipeline

    def check(args: tuple[Any, ...]) -> None:
        if allow is None or not allow(args):
            redis_check(args)

    class ReadOnlyPipeline(Pipeline):  # type: ignore[misc]
        def execute_command(self, *args: Any, **kwargs: Any) -> Any:
            check(args)
            return super().execute_command(*args, **kwargs)

    class ReadOnlyRedis(redis.Redis):  # type: ignore[misc]
        def execute_command(self, *args: Any, **options: Any) -> Any:
            check(args)
            return super().execute_command(*args, **options)

        def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
            return ReadOnlyPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)

        def pubsub(self, **kwargs: Any) -> Any:
            raise ReadOnlyViolation("redis", "SUBSCRIBE (pub/sub)")

        def monitor(self) -> Any:
            raise ReadOnlyViolation("redis", "MONITOR")

    return ReadOnlyRedis(connection_pool=writable.connection_pool)


# ---- Kafka --------------------------------------------------------------------------------------
# a marker key that survives copies of the settings (dict(conf), {**conf}); no kafka-python client
# takes it (backends.kafka passes each client only the keys it knows)
KAFKA_READ_ONLY_KEY = "opsctl.read_only"


class KafkaReadOnlyConf(dict[str, Any]):
    """The connection settings of a read-only ``Cluster``: the factories refuse to build a producer
    or a group consumer from them, or from a copy of them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self[KAFKA_READ_ONLY_KEY] = True


def kafka_conf_is_read_only(conf: Mapping[str, Any]) -> bool:
    return isinstance(conf, KafkaReadOnlyConf) or bool(conf.get(KAFKA_READ_ONLY_KEY))


def kafka_admin_is_read(name: str) -> bool:
    return name == "close" or name.startswith(("describe_", "list_"))


class ReadOnlyAdmin:
    """Wraps a KafkaAdminClient: describe_* / list_* pass, every other attribute is refused
    (alter_group_offsets, delete_records, create_topics, delete_consumer_groups, private ones...)."""

    def __init__(self, admin: Any) -> None:
        object.__setattr__(self, "_admin", admin)

    def __getattr__(self, name: str) -> Any:
        if kafka_admin_is_read(name):
            return getattr(self._admin, name)
        raise ReadOnlyViolation("kafka", f"admin.{name}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise ReadOnlyViolation("kafka", f"admin.{name} =")


def kafka_check_producer(conf: Mapping[str, Any]) -> None:
    if kafka_conf_is_read_only(conf):
        raise ReadOnlyViolation("kafka", "a producer", "read-only code may not write records")


def kafka_consumer_class(conf: Mapping[str, Any], overrides: Mapping[str, Any]) -> Any:
    """The consumer class for these settings: for read-only code, a group-less consumer that cannot
    commit (joining the inspected group would rebalance its real members)."""
    from kafka import KafkaConsumer

    if not kafka_conf_is_read_only(conf):
        return KafkaConsumer
    if overrides.get("group_id") is not None or overrides.get("enable_auto_commit"):
        raise ReadOnlyViolation("kafka", f"a consumer in group {overrides.get('group_id')!r}",
                                "read-only code reads without a group and never commits")

    class ReadOnlyConsumer(KafkaConsumer):  # type: ignore[misc]
        def commit(self, *args: Any, **kwargs: Any) -> Any:
            raise ReadOnlyViolation("kafka", "consumer.commit (OffsetCommit)")

        def commit_async(self, *args: Any, **kwargs: Any) -> Any:
            raise ReadOnlyViolation("kafka", "consumer.commit_async (OffsetCommit)")

    return ReadOnlyConsumer
