"""`opsctl doctor`'s probes: one per backend, each a few read-only calls on the protocol itself.

Each probe answers, for one environment's backend section (empty: the standard variables):
reachable (the protocol answered, not a TCP accept), authenticated, which version, who we are, and
which of the calls the shipped diagnoses make would be refused (`missing`).  Every call goes through
the read-only clients of this package (guards included) and is bounded by ``timeout``; the caller
(``opsctl.doctor``) still enforces one deadline over all of them, for a server that hangs past a
client's own timeout.

A probe returns a :class:`Probe`; ``status`` is ``ok``, ``permission_gap`` (answers, but a diagnosis
would be refused: ``missing``), ``unreachable``, ``denied`` (the credentials were refused) or
``misconfigured``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from opsctl.errors import BackendError, OpsctlError


@dataclass
class Probe:
    backend: str
    target: str = ""
    status: str = "ok"
    version: str = ""
    identity: str = ""
    detail: str = ""
    missing: list[str] = field(default_factory=list)  # "what: why a diagnosis needs it"
    notes: list[str] = field(default_factory=list)  # not needed by a diagnosis (e.g. mitigations)
    latency_ms: float | None = None


def _gaps(probe: Probe) -> Probe:
    if probe.missing and probe.status == "ok":
        probe.status = "permission_gap"
    return probe


def configured(backend: str, cfg: dict[str, Any]) -> bool:
    """Whether an environment configures this backend: its section, else its standard variables
    (never a network call: the AWS instance role or a default localhost server are not guessed)."""
    if cfg:
        return True
    env = os.environ
    if backend == "postgres":
        return any(env.get(v) for v in ("DATABASE_URL", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE",
                                         "PGSERVICE", "PGHOSTADDR"))
    if backend == "redis":
        return bool(env.get("REDIS_URL"))
    if backend == "kafka":
        return bool(env.get("KAFKA_BOOTSTRAP_SERVERS"))
    if backend == "aws":
        home = Path.home() / ".aws"
        return any(env.get(v) for v in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_REGION",
                                        "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL",
                                        "AWS_WEB_IDENTITY_TOKEN_FILE",
                                        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                                        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")) or \
            (home / "credentials").is_file() or (home / "config").is_file()
    if backend == "prometheus":
        return bool(env.get("PROMETHEUS_URL"))
    if backend == "kubernetes":
        return bool(env.get("KUBECONFIG") or env.get("KUBERNETES_SERVICE_HOST")) or \
            (Path.home() / ".kube" / "config").is_file()
    return False


# ---- PostgreSQL ------------------------------------------------------------------------------------
_PG = """SELECT current_setting('server_version') AS version, current_user AS "user",
  (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser,
  pg_has_role('pg_read_all_stats', 'USAGE') AS read_all_stats,
  pg_has_role('pg_monitor', 'USAGE') AS monitor,
  pg_has_role('pg_signal_backend', 'USAGE') AS signal_backend,
  EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements') AS stat_statements"""


def postgres(cfg: dict[str, Any], timeout: float) -> Probe:
    from opsctl.backends import postgres as pg

    settings = pg.settings_from(cfg)
    settings = replace(settings, connect_timeout=max(1.0, min(settings.connect_timeout, timeout)))
    probe = Probe("postgres", target=settings.describe())
    start = time.monotonic()
    try:
        conn = pg.connect(settings)
    except OpsctlError as e:
        text = str(e)
        auth = "password authentication failed" in text or "no password supplied" in text or \
            ("role \"" in text and "does not exist" in text) or "pg_hba.conf" in text
        probe.status, probe.detail = ("denied" if auth else "unreachable"), text
        return probe
    try:
        conn.execute(f"SET statement_timeout = {int(timeout * 1000)}; SET default_transaction_read_only = on")
        row = pg.fetch(conn, _PG)[0]
    except Exception as e:
        probe.status, probe.detail = "unreachable", f"postgres {probe.target}: connected, then: " + \
            pg.clean(str(e), settings.secrets)
        return probe
    finally:
        conn.close()
    probe.latency_ms = round((time.monotonic() - start) * 1000, 1)
    probe.version, probe.identity = f"PostgreSQL {row['version']}", str(row["user"])
    if not (row["superuser"] or row["read_all_stats"]):
        probe.missing.append("pg_monitor (or pg_read_all_stats): without it the diagnoses see other "
                             "roles' sessions, queries and statement statistics as <insufficient "
                             f"privilege> (GRANT pg_monitor TO {row['user']})")
    if not (row["superuser"] or row["signal_backend"]):
        probe.notes.append("mitigations that end sessions need pg_signal_backend")
    if not row["stat_statements"]:
        probe.notes.append("pg_stat_statements is not installed in this database (top statements: "
                           "an optional probe)")
    return _gaps(probe)


# ---- Redis -----------------------------------------------------------------------------------------
def redis(cfg: dict[str, Any], timeout: float) -> Probe:
    from redis import exceptions as rx

    from opsctl.backends import redis as rd
    from opsctl.backends.readonly import read_only_redis

    settings = rd.settings_from(cfg)
    settings = replace(settings, connect_timeout=min(settings.connect_timeout, timeout),
                       timeout=min(settings.timeout, timeout))
    probe = Probe("redis", target=settings.describe())
    start = time.monotonic()
    try:
        client = read_only_redis(rd.make_client(settings))
        info = client.info("server")
    except BackendError as e:
        probe.status, probe.detail = "misconfigured", str(e)
        return probe
    except (rx.AuthenticationError, rx.AuthenticationWrongNumberOfArgsError) as e:
        probe.status, probe.detail = "denied", f"redis {probe.target}: {rd._clean(str(e), settings.secrets)}"
        return probe
    except rx.NoPermissionError as e:  # e.g. CLIENT SETNAME, sent on connect (client_name=opsctl)
        probe.status = "permission_gap"
        probe.missing.append(f"{rd._clean(str(e), settings.secrets)}: every redis step needs it (opsctl "
                             "names its connections), so nothing else could be checked")
        return probe
    except rx.RedisError as e:
        text = rd._clean(str(e), settings.secrets)
        auth = "NOAUTH" in text or "WRONGPASS" in text or "invalid username-password" in text
        probe.status, probe.detail = ("denied" if auth else "unreachable"), f"redis {probe.target}: {text}"
        return probe
    probe.latency_ms = round((time.monotonic() - start) * 1000, 1)
    probe.version = f"Redis {info.get('redis_version', '?')}"
    from urllib.parse import urlsplit

    probe.identity = str(dict(settings.overrides).get("username") or urlsplit(settings.url).username
                         or "default")
    checks = {"INFO": lambda: client.info("all"), "CLIENT LIST": client.client_list,
              "SLOWLOG GET": lambda: client.slowlog_get(1), "SCAN": lambda: client.scan(0, count=1),
              "MEMORY USAGE": lambda: client.memory_usage("opsctl:doctor"),
              "GET": lambda: client.get("opsctl:doctor")}
    for name, call in checks.items():
        try:
            call()
        except rx.NoPermissionError:
            acl = "+" + name.lower().replace(" ", "|")
            probe.missing.append(f"{name}: the rb-010/rb-004 diagnoses call it (ACL: {acl})")
        except rx.RedisError as e:
            text = rd._clean(str(e), settings.secrets)
            if "NOPERM" in text or "no permissions" in text:
                probe.missing.append(f"{name}: refused ({text})")
            else:
                probe.notes.append(f"{name}: {text}")
    client.close()
    return _gaps(probe)


# ---- Kafka -----------------------------------------------------------------------------------------
def kafka(cfg: dict[str, Any], timeout: float) -> Probe:
    from opsctl.backends import kafka as kf
    from opsctl.backends.kafka_probe import probe_broker, scrub
    from opsctl.backends.readonly import ReadOnlyAdmin

    try:
        conf = kf.settings(cfg)
    except BackendError as e:
        return Probe("kafka", status="misconfigured", detail=str(e))
    conf["connect_timeout"] = min(float(conf.get("connect_timeout") or kf.DEFAULT_CONNECT_TIMEOUT), timeout)
    servers = list(conf["bootstrap_servers"])
    probe = Probe("kafka", target=",".join(servers))
    start = time.monotonic()
    answers = [probe_broker(s, timeout, conf) for s in servers[:3]]
    if not any(a["state"] == "up" for a in answers):
        probe.status = "unreachable"
        probe.detail = "; ".join(f"{a['target']}: {a['error']}" for a in answers)
        return probe
    conf.setdefault("request_timeout_ms", int(timeout * 1000))
    try:
        raw = kf.make_admin(conf)
    except BackendError as e:
        text = str(e)
        probe.status = "denied" if "uthenticat" in text or "SASL" in text else "unreachable"
        probe.detail = text
        return probe
    admin = ReadOnlyAdmin(raw)
    # what kafka-python inferred from the ApiVersions answer (the broker does not say its release)
    version = raw.config.get("api_version") or getattr(getattr(raw, "_manager", None), "broker_version", None)
    probe.version = "Kafka API ~" + (".".join(map(str, version)) if version else "?")
    probe.identity = str(conf.get("sasl_plain_username") or "anonymous")
    checks = {"describe topics": admin.list_topics, "describe groups": admin.list_groups}
    for name, call in checks.items():
        try:
            call()
        except Exception as e:  # kafka-python's error classes name the refusal
            kind = type(e).__name__
            text = scrub(str(e), conf)
            if "Authorization" in kind or "AUTHORIZATION" in text.upper():
                probe.missing.append(f"{name}: refused by ACL ({kind}); rb-008/rb-009/rb-014 diagnoses "
                                     "need Describe on the cluster, topics and groups")
            else:
                probe.notes.append(f"{name}: {kind}: {text[:200]}")
    probe.latency_ms = round((time.monotonic() - start) * 1000, 1)
    raw.close()
    return _gaps(probe)


# ---- AWS -------------------------------------------------------------------------------------------
_AWS_READS = (("cloudwatch", "DescribeAlarms", "describe_alarms", {"MaxRecords": 1}),
              ("sqs", "ListQueues", "list_queues", {"MaxResults": 1}),
              ("rds", "DescribeDBClusters", "describe_db_clusters", {"MaxRecords": 20}),
              ("ecs", "ListClusters", "list_clusters", {"maxResults": 1}),
              ("lambda", "ListFunctions", "list_functions", {"MaxItems": 1}))


def aws(cfg: dict[str, Any], timeout: float) -> Probe:
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    from opsctl.backends import aws as aw
    from opsctl.backends.readonly import guard_aws_client

    budget = (min(aw.CONNECT_TIMEOUT, timeout / 2), min(aw.READ_TIMEOUT, timeout), 1)
    probe = Probe("aws", target=" ".join(f"{k}={cfg[k]}" for k in ("profile", "region", "endpoint_url")
                                         if cfg.get(k)) or "the boto3 chain")
    start = time.monotonic()
    try:
        session = aw.new_session(cfg)  # one session: a client per service from it costs ~0.1 s, not ~0.7
        sts = guard_aws_client(aw._make_client(cfg, "sts", budget, session))
        ident = sts.get_caller_identity()
    except BackendError as e:
        probe.status, probe.detail = "misconfigured", str(e)
        return probe
    except NoCredentialsError:
        probe.status, probe.detail = "denied", "aws: no credentials found (the boto3 chain)"
        return probe
    except ClientError as e:
        code, message = aw._code_and_message(e)
        probe.status = "denied" if code in aw._AUTH_CODES else "unreachable"
        probe.detail = f"aws: sts GetCallerIdentity: {code}: {message}"
        return probe
    except BotoCoreError as e:
        probe.status, probe.detail = "unreachable", f"aws: {e}"
        return probe
    probe.latency_ms = round((time.monotonic() - start) * 1000, 1)
    probe.identity = str(ident.get("Arn", ""))
    probe.version = f"region {sts.meta.region_name}"
    # clients made one after the other (a session is not thread-safe), called concurrently
    clients = [guard_aws_client(aw._make_client(cfg, service, budget, session)) for service, *_ in _AWS_READS]

    def read(job: tuple[Any, tuple[str, str, str, dict[str, Any]]]) -> tuple[str, str] | None:
        client, (_, _, method, kwargs) = job
        try:
            getattr(client, method)(**kwargs)
        except ClientError as e:
            return aw._code_and_message(e)
        except BotoCoreError as e:
            return "", str(e)
        return None

    jobs = list(zip(clients, _AWS_READS, strict=True))
    for (service, operation, _, _), error in zip(_AWS_READS, _parallel(read, jobs), strict=True):
        if error and error[0] in aw._AUTH_CODES:
            probe.missing.append(f"{service}:{operation}: {error[0]} (the diagnoses read it)")
        elif error:
            probe.notes.append(f"{service}:{operation}: {' '.join(error)[:200]}")
    return _gaps(probe)


# ---- Kubernetes ------------------------------------------------------------------------------------
# what the diagnoses list, by API path (plain GETs: the generated API classes cost seconds of CPU)
_K8S_READS = (("pods", "/api/v1"), ("events", "/api/v1"), ("services", "/api/v1"), ("endpoints", "/api/v1"),
              ("deployments", "/apis/apps/v1"), ("statefulsets", "/apis/apps/v1"),
              ("replicasets", "/apis/apps/v1"), ("controllerrevisions", "/apis/apps/v1"),
              ("horizontalpodautoscalers", "/apis/autoscaling/v1"),
              ("networkpolicies", "/apis/networking.k8s.io/v1"))


def kubernetes(cfg: dict[str, Any], timeout: float, namespace: str) -> Probe:
    from opsctl.backends import kubernetes as k8s

    try:
        kube = k8s.read_only_kube(k8s.connect(cfg))
    except BackendError as e:
        return Probe("kubernetes", status="misconfigured", detail=str(e))
    probe = Probe("kubernetes", target=kube.where)
    start = time.monotonic()
    try:
        version = kube.get("/version", what="the API server's version", timeout=timeout)
    except BackendError as e:
        text = str(e)
        probe.status = "denied" if "401" in text else "unreachable"
        probe.detail = text
        return probe
    except OpsctlError as e:
        probe.status, probe.detail = "unreachable", str(e)
        return probe
    probe.latency_ms = round((time.monotonic() - start) * 1000, 1)
    probe.version = f"Kubernetes {version.get('gitVersion', '?')}"
    probe.identity = f"namespace {namespace}"

    def read(job: tuple[str, str]) -> str | None:
        resource, prefix = job
        try:
            kube.get(f"{prefix}/namespaces/{namespace}/{resource}", {"limit": 1}, timeout=timeout)
        except OpsctlError as e:
            return str(e)
        return None

    for (resource, _), error in zip(_K8S_READS, _parallel(read, list(_K8S_READS)), strict=True):
        if error and "forbidden" in error:
            probe.missing.append(f"list {resource} in {namespace}: forbidden by RBAC (the diagnoses "
                                 "read it)")
        elif error:
            probe.notes.append(f"list {resource}: {error}")
    return _gaps(probe)


def _parallel(fn: Any, items: list[Any]) -> list[Any]:
    """fn over items, concurrently (independent read calls: their latencies do not add up)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(8, len(items) or 1)) as pool:
        return list(pool.map(fn, items))


# ---- Prometheus ------------------------------------------------------------------------------------
def prometheus(cfg: dict[str, Any], timeout: float) -> Probe:
    """``GET /api/v1/status/buildinfo`` (the version) and one instant query (what rb-004 sends)."""
    import json

    from opsctl.backends import http

    base = str(cfg.get("url") or os.environ.get("PROMETHEUS_URL") or "").rstrip("/")
    probe = Probe("prometheus", target=http.redact_url(base))
    start = time.monotonic()
    try:
        info = http.get(f"{base}/api/v1/status/buildinfo", timeout)
        query = http.get(f"{base}/api/v1/query?query=vector(1)", timeout)
    except http.Unreachable as e:
        probe.status, probe.detail = "unreachable", f"prometheus: {e}"
        return probe
    probe.latency_ms = round((time.monotonic() - start) * 1000, 1)
    if info.status in (401, 403) or query.status in (401, 403):
        probe.status = "denied"
        probe.detail = f"prometheus {probe.target}: HTTP {max(info.status, query.status)}"
        return probe
    try:
        build, answer = json.loads(info.body), json.loads(query.body)
        probe.version = f"Prometheus {build['data']['version']}"
        if answer.get("status") != "success":
            raise ValueError(answer.get("error"))
    except (ValueError, KeyError, TypeError) as e:
        probe.status = "unreachable"
        probe.detail = (f"prometheus {probe.target}: HTTP {info.status}/{query.status} without a Prometheus "
                        f"API answer ({type(e).__name__}): is this the Prometheus base URL?")
    return probe
