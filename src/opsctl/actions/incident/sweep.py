"""`incident.sweep`: every backend the environment configures, probed at once, read-only.

Each probe is an existing read-only action (postgres.connections, redis.info, kafka.lag,
aws.sqs.stats, aws.cloudwatch.alarms, k8s.workloads) or an HTTP health check, run in a thread of
its own with its own deadline on the run's (guarded) clients: a dead backend is a signal, a hung
one costs one deadline (its probe is abandoned, the others are not held up), a denied one is a
blind spot, never a failed triage.
"""

from __future__ import annotations

import difflib
import json
import threading
import time
from typing import Any

from opsctl import actions
from opsctl.actions import register
from opsctl.actions.base import Action, ActionContext, type_schema
from opsctl.actions.incident import rules
from opsctl.actions.needs import Iam, KafkaAcl, Kube, Local, Pg, RedisAcl
from opsctl.backends import http as http_backend
from opsctl.backends.configured import configured
from opsctl.errors import ActionError, BackendError, Cancelled, StepTimeout

LIST = {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}],
        "description": "a list, or a comma-separated string; empty: the environment's setting"}
_DENIED = ("permission denied", "access denied", "accessdenied", "not authorized", "unauthorized",
           "forbidden", "noauth", "wrongpass", "authentication", "must be superuser", "pg_read_all_stats")
_DOWN = {"down", "out_of_service", "fail", "failed", "unhealthy", "error", "critical"}
BACKENDS = ("http", "postgres", "redis", "kafka", "aws", "kubernetes")


def _list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v).strip() for v in (value or []) if str(v).strip()]


def _services(value: Any) -> list[tuple[str, str]]:
    """name=url pairs from "a=http://..,b=http://..", a list of {name, url} or a mapping."""
    if isinstance(value, dict):
        return [(str(k), str(v)) for k, v in value.items()]
    out = []
    for item in (value if isinstance(value, list) else _list(value)):
        if isinstance(item, dict):
            out.append((str(item.get("name") or item.get("url")), str(item.get("url") or "")))
        else:
            name, sep, url = str(item).partition("=")
            out.append((name, url) if sep and "://" not in name else (str(item), str(item)))
    return out


@register
class Sweep(Action):
    """A broad read-only sweep of the environment, classified into a proposed severity.

    Checks, in parallel, whatever the environment configures (skipping the rest): the HTTP health
    endpoints of its services (reachable = an HTTP answer; healthy = 2xx and not reporting DOWN),
    PostgreSQL connection usage, Redis memory / hit rate / clients, the lag of the listed Kafka
    consumer groups, SQS queue and DLQ depths, CloudWatch alarms in ALARM, Kubernetes workloads not
    ready.  Lists default to the environment's settings (`services`, `kafka_groups`, `queues`,
    `alarm_prefix`, `namespaces`).

    ```yaml
    - id: sweep
      action: incident.sweep
      with: {services: "api=http://api:8080/actuator/health", kafka_groups: "orders"}
      expect:
        - that: "result.severity != 'P0'"
          message: "{{ result.p0 | join('; ') }}"
    ```
    """

    name = "incident.sweep"
    # what its probes need (a backend it skips or the environment does not configure needs nothing)
    permissions = (Local("core", "network access to the services' health URLs (GET)"),
                   Pg(roles=("pg_monitor",)), RedisAcl(("client|setname", "info")),
                   KafkaAcl("Group", "{kafka_groups}", ("Describe",)), KafkaAcl("Topic", "*", ("Describe",)),
                   Iam(("sqs:GetQueueUrl", "sqs:GetQueueAttributes"), ("arn:aws:sqs:*:*:{queues}",)),
                   Iam(("cloudwatch:DescribeAlarms",)),
                   Kube("apps", ("deployments", "statefulsets"), ("list",)))
    backend = "core"
    summary = ("probe every configured backend at once (health endpoints, pool, cache, lag, queues, "
               "alarms, workloads) and propose a severity with the runbooks to run")
    schema = type_schema({
        "services": {"anyOf": [{"type": "array"}, {"type": "string"}, {"type": "object"}],
                     "description": "name=url health endpoints (list, mapping or 'a=url,b=url')"},
        "database": {"type": "string", "description": "PostgreSQL database (empty: the environment's)"},
        "kafka_groups": LIST, "queues": LIST, "namespaces": LIST,
        "alarm_prefix": {"type": "string", "description": "only alarms whose name starts so"},
        "skip": {**LIST, "description": "backends not to probe (" + ", ".join(BACKENDS) + ")"},
        "thresholds": {"type": "object", "properties": {
            k: {"type": "number", "minimum": 0} for k in rules.Thresholds.__dataclass_fields__},
            "additionalProperties": False},
        "probe_timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 300, "default": 10,
                          "description": "seconds each probe may take (a hung backend costs this once)"},
    })

    def _setting(self, arg: str, setting: str) -> Any:
        value = self.args.get(arg)
        if value not in (None, "", [], {}):
            return value
        env = self.ctx.environment
        return (getattr(env, "settings", None) or {}).get(setting)

    def plan_probes(self) -> tuple[list[tuple[str, str, Any]], dict[str, str]]:
        """[(backend, target, how)], {backend: why skipped}."""
        skip = set(_list(self.args.get("skip")))
        unknown = sorted(skip - set(BACKENDS))
        if unknown:  # a misspelt name would probe the backend it meant to skip
            close = difflib.get_close_matches(unknown[0], BACKENDS, n=1)
            raise ActionError(f"skip: unknown backend {unknown[0]!r}"
                              f"{f' (did you mean {close[0]!r}?)' if close else ''}; "
                              f"one of {', '.join(BACKENDS)}")
        probes: list[tuple[str, str, Any]] = []
        skipped: dict[str, str] = {}
        services = _services(self._setting("services", "services"))
        lists: dict[str, list[str]] = {
            "kafka": _list(self._setting("kafka_groups", "kafka_groups")),
            "aws": _list(self._setting("queues", "queues")),
            "kubernetes": _list(self._setting("namespaces", "namespaces")) or ["default"]}
        for backend in BACKENDS:
            if backend in skip:
                skipped[backend] = "skipped (skip)"
                continue
            if backend == "http":
                if not services:
                    skipped["http"] = "no services listed (settings.services or -p services)"
                probes += [("http", name, url) for name, url in services]
                continue
            ok, how = configured(self.ctx.environment, backend)
            if not ok:
                skipped[backend] = how
                continue
            if backend == "postgres":
                probes.append(("postgres", "connections", {"database": self.args.get("database") or ""}))
            elif backend == "redis":
                probes.append(("redis", "redis", {}))
            elif backend == "kafka":
                if not lists["kafka"]:
                    skipped["kafka"] = "no consumer groups listed (settings.kafka_groups or -p kafka_groups)"
                probes += [("kafka", g, {"group": g}) for g in lists["kafka"]]
            elif backend == "aws":
                probes += [("sqs", q, {"queue": q}) for q in lists["aws"]]
                prefix = self._setting("alarm_prefix", "alarm_prefix")
                probes.append(("alarms", "cloudwatch", {"prefix": prefix} if prefix else {}))
            elif backend == "kubernetes":
                probes += [("kubernetes", ns, {"selector": "", "namespace": ns, "kind": kind})
                           for ns in lists["kubernetes"] for kind in ("deployment", "statefulset")]
        return probes, skipped

    def run(self) -> dict[str, Any]:
        probes, skipped = self.plan_probes()
        timeout = float(self.args.get("probe_timeout", 10))
        results = self._run_all(probes, timeout)
        t = rules.Thresholds.from_args(self.args.get("thresholds") or {})
        signals: list[rules.Signal] = []
        blind: list[str] = []
        k8s: dict[str, dict[str, Any]] = {}
        for probe in results:
            kind, status = probe["kind"], probe["status"]
            if status in ("denied", "error"):
                blind.append(f"{probe['backend']} {probe['target']}: {probe['error']}")
                continue
            if kind == "http":
                signals += rules.http_signals(probe, t)
            elif kind == "postgres":
                signals += rules.postgres_signals(probe, t, str(self.args.get("database") or ""))
            elif kind == "redis":
                signals += rules.redis_signals(probe, t)
            elif kind == "kafka":
                signals += rules.kafka_signals(probe, t)
            elif kind == "sqs":
                signals += rules.sqs_signals(probe, t)
            elif kind == "alarms":
                signals += rules.alarm_signals(probe)
            elif kind == "kubernetes":  # deployments and statefulsets of a namespace: one signal set
                merged = k8s.setdefault(probe["target"], {**probe, "result": {"items": []}})
                if status == "unreachable":
                    merged.update(status="unreachable", error=probe["error"])
                else:
                    merged["result"]["items"] += probe["result"]["items"]
        for probe in k8s.values():
            signals += rules.k8s_signals(probe)
        env = self.ctx.environment
        settings = getattr(env, "settings", None) or {}
        verdict = rules.classify(signals, war_room_prefix=str(settings.get("war_room_prefix") or "incident"),
                                 escalation=settings.get("escalation") if isinstance(
                                     settings.get("escalation"), dict) else None)
        return {**verdict, "probes": [{k: v for k, v in p.items() if k != "result"} for p in results],
                "checked": len(results), "skipped": skipped, "blind_spots": blind,
                "unreachable": [f"{p['backend']} {p['target']}" for p in results
                                if p["status"] == "unreachable"]}

    # ---- probes --------------------------------------------------------------------------------
    def _run_all(self, probes: list[tuple[str, str, Any]], timeout: float) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{} for _ in probes]
        events = [threading.Event() for _ in probes]
        threads = []
        start = time.monotonic()
        for i, (kind, target, how) in enumerate(probes):
            ctx = self.ctx.child(start + timeout, events[i])

            def work(i: int = i, kind: str = kind, target: str = target, how: Any = how,
                     ctx: ActionContext = ctx) -> None:
                out[i] = self._probe(kind, target, how, ctx, timeout)

            th = threading.Thread(target=work, name=f"probe-{kind}-{target}"[:60], daemon=True)
            th.start()
            threads.append(th)
        end = start + timeout + 1.0  # each probe checks its own deadline; this is the backstop
        for i, th in enumerate(threads):
            while th.is_alive() and time.monotonic() < end:
                th.join(0.1)
                if self.ctx.cancelled.is_set():
                    for ev in events:
                        ev.set()
                    raise Cancelled("interrupted")
            if th.is_alive() or not out[i]:  # hung below the client's own timeout: abandoned
                events[i].set()
                kind, target, _ = probes[i]
                out[i] = {**_base(kind, target), "status": "unreachable",
                          "error": f"no answer within {timeout:g}s (hung)"}
        return out

    def _probe(self, kind: str, target: str, how: Any, ctx: ActionContext,
               timeout: float) -> dict[str, Any]:
        t0 = time.monotonic()
        base = _base(kind, target)
        try:
            if kind == "http":
                found = _http(str(how), timeout)
            else:
                cls = actions.get(_ACTION[kind])
                assert cls is not None
                result = cls(dict(how), ctx).run()
                found = {"status": "ok", "result": result, "summary": cls.summarize(result)}
        except (StepTimeout, TimeoutError):
            found = {"status": "unreachable", "error": f"no answer within {timeout:g}s (hung)"}
        except BackendError as e:
            denied = any(w in str(e).lower() for w in _DENIED)
            found = {"status": "denied" if denied else "unreachable", "error": str(e)}
        except Cancelled:
            found = {"status": "unreachable", "error": f"no answer within {timeout:g}s (hung)"}
        except ActionError as e:
            denied = any(w in str(e).lower() for w in _DENIED)
            found = {"status": "denied" if denied else "error", "error": str(e)}
        except Exception as e:  # noqa: BLE001 - one probe's bug must not hide the other probes
            found = {"status": "error", "error": f"{type(e).__name__}: {e}"[:300]}
        return {**base, **found, "seconds": round(time.monotonic() - t0, 3)}

    @classmethod
    def summarize(cls, r: Any) -> str:
        sev = r["severity"] if r["severity"] != "none" else "no incident signal"
        skipped = f"; skipped: {', '.join(sorted(r['skipped']))}" if r["skipped"] else ""
        return f"proposed {sev}; {len(r['signals'])} signal(s) from {r['checked']} probe(s){skipped}"


_ACTION = {"postgres": "postgres.connections", "redis": "redis.info", "kafka": "kafka.lag",
           "sqs": "aws.sqs.stats", "alarms": "aws.cloudwatch.alarms", "kubernetes": "k8s.workloads"}
_BACKEND = {"http": "http", "postgres": "postgres", "redis": "redis", "kafka": "kafka", "sqs": "aws",
            "alarms": "aws", "kubernetes": "kubernetes"}


def _base(kind: str, target: str) -> dict[str, Any]:
    return {"kind": kind, "backend": _BACKEND[kind], "target": target}


def _http(url: str, timeout: float) -> dict[str, Any]:
    """Reachable = an HTTP answer; healthy = 2xx and a reported status (Spring actuator, the
    common health JSON) that is not DOWN."""
    try:
        resp = http_backend.get(url, timeout=timeout, max_bytes=65536)
    except http_backend.Unreachable as e:
        return {"status": "unreachable", "error": str(e)}
    reported = None
    if "json" in resp.content_type:
        try:
            doc = json.loads(resp.body)
            reported = doc.get("status") if isinstance(doc, dict) else None
        except ValueError:
            reported = None
    down = isinstance(reported, str) and reported.lower() in _DOWN
    healthy = 200 <= resp.status < 300 and not down
    return {"status": "ok", "http_status": resp.status, "latency_ms": resp.latency_ms,
            "reported": reported, "healthy": healthy, "url": http_backend.redact_url(url),
            "summary": f"HTTP {resp.status}{' ' + str(reported) if reported else ''} "
                       f"in {resp.latency_ms:.0f} ms"}
