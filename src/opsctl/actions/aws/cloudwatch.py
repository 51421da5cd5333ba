"""CloudWatch: metric statistics and alarm states, mostly for diagnose and verify steps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from opsctl.actions import register
from opsctl.actions.base import Action, type_schema
from opsctl.actions.needs import Iam
from opsctl.backends.aws import aws_errors, client
from opsctl.errors import ArgumentError

_STATS = ["Average", "Sum", "Minimum", "Maximum", "SampleCount"]


@register
class Metric(Action):
    """Statistics of one CloudWatch metric over the last minutes (latest, max, min, average).

    ```yaml
    - id: cpu
      action: aws.cloudwatch.metric
      with:
        namespace: AWS/RDS
        metric: CPUUtilization
        dimensions: {DBClusterIdentifier: orders-db}
        statistic: Average
        minutes: 15
      expect:
        - that: "result.max is none or result.max < 90"
          message: "writer CPU peaked at {{ result.max }}%"
    ```
    """

    name = "aws.cloudwatch.metric"
    permissions = (Iam(("cloudwatch:GetMetricStatistics",)),)
    backend = "aws"
    summary = "latest/max/min/avg of a metric over the last N minutes (None when no data)"
    schema = type_schema({
        "namespace": {"type": "string", "minLength": 1},
        "metric": {"type": "string", "minLength": 1},
        "dimensions": {"type": "object", "additionalProperties": {"type": "string"}, "default": {}},
        "statistic": {"enum": _STATS, "default": "Average"},
        "period": {"type": "integer", "minimum": 1, "default": 60},
        "minutes": {"type": "integer", "minimum": 1, "maximum": 1440, "default": 10},
    }, required=["namespace", "metric"])

    def run(self) -> dict[str, Any]:
        stat = self.args.get("statistic", "Average")
        end = datetime.now(UTC)
        dims = [{"Name": k, "Value": str(v)} for k, v in (self.args.get("dimensions") or {}).items()]
        with aws_errors(f"metric {self.args['namespace']}/{self.args['metric']}"):
            points = client(self.ctx, "cloudwatch").get_metric_statistics(
                Namespace=self.args["namespace"], MetricName=self.args["metric"], Dimensions=dims,
                StartTime=end - timedelta(minutes=self.args.get("minutes", 10)),
                EndTime=end + timedelta(minutes=1), Period=self.args.get("period", 60),
                Statistics=[stat])["Datapoints"]
        values = [p[stat] for p in sorted(points, key=lambda p: p["Timestamp"])]
        return {"metric": self.args["metric"], "statistic": stat, "datapoints": len(values),
                "latest": values[-1] if values else None, "max": max(values, default=None),
                "min": min(values, default=None),
                "avg": round(sum(values) / len(values), 3) if values else None}

    @classmethod
    def summarize(cls, result: Any) -> str:
        if not result["datapoints"]:
            return f"{result['metric']}: no data"
        return (f"{result['metric']} {result['statistic']}: latest {result['latest']}, "
                f"max {result['max']}, {result['datapoints']} points")


@register
class Alarms(Action):
    """CloudWatch alarms and their state, by names, name prefix, or the metric they watch.

    `names` wins, then `prefix`; with neither, `metric` (+ `namespace`, `dimensions`) finds every
    alarm on that metric (DescribeAlarmsForMetric), and `mentioning` every alarm whose name or one of
    whose dimension values contains that text (case-insensitive), so a runbook needs no alarm
    naming convention.

    ```yaml
    - id: alarms
      action: aws.cloudwatch.alarms
      with: {namespace: AWS/Lambda, metric: Errors, dimensions: {FunctionName: jobs-worker}}
      expect:
        - that: "result.in_alarm == 0"
          severity: warning
          message: "in ALARM: {{ result.in_alarm_names | join(', ') }}"
    ```
    """

    name = "aws.cloudwatch.alarms"
    # by metric (no names, no prefix) the alarms come from DescribeAlarmsForMetric
    permissions = (Iam(("cloudwatch:DescribeAlarms",)),
                   Iam(("cloudwatch:DescribeAlarmsForMetric",), when="metric"))
    backend = "aws"
    summary = "alarm states (OK / ALARM / INSUFFICIENT_DATA)"
    schema = type_schema({"names": {"type": "array", "items": {"type": "string"}},
                          "prefix": {"type": "string"},
                          "namespace": {"type": "string"}, "metric": {"type": "string"},
                          "dimensions": {"type": "object", "additionalProperties": {"type": "string"}},
                          "mentioning": {"type": "string"}})

    def run(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        names = [n for n in self.args.get("names") or [] if n]
        if names:
            kwargs["AlarmNames"] = names
        elif self.args.get("prefix"):
            kwargs["AlarmNamePrefix"] = self.args["prefix"]
        elif self.args.get("metric"):
            dims = [{"Name": k, "Value": str(v)} for k, v in (self.args.get("dimensions") or {}).items()]
            with aws_errors(f"alarms on {self.args.get('namespace', '')}/{self.args['metric']}"):
                found = client(self.ctx, "cloudwatch").describe_alarms_for_metric(
                    MetricName=self.args["metric"], Namespace=self.args.get("namespace", ""),
                    Dimensions=dims).get("MetricAlarms", [])
            return self._result(found)
        elif not self.args.get("mentioning") and "names" in self.args:
            return self._result([])  # names that all rendered empty: no alarm asked for, not every alarm
        with aws_errors("describe alarms"):
            pages = client(self.ctx, "cloudwatch").get_paginator("describe_alarms").paginate(**kwargs)
            found = [a for page in pages for a in page.get("MetricAlarms", [])]
        missing = [n for n in names if n not in {a["AlarmName"] for a in found}]
        if missing:  # a named alarm that does not exist can prove nothing: bad input, not "no alarm"
            raise ArgumentError(f"no CloudWatch alarm named {', '.join(map(repr, missing))}: the error "
                                "rate cannot be checked (check the name, e.g. -p error_alarm=...)")
        if not kwargs and self.args.get("mentioning"):
            text = self.args["mentioning"].lower()
            found = [a for a in found if text in a["AlarmName"].lower()
                     or any(text in str(d.get("Value", "")).lower() for d in a.get("Dimensions", []))]
        return self._result(found)

    @staticmethod
    def _result(found: list[dict[str, Any]]) -> dict[str, Any]:
        alarms = [{"name": a["AlarmName"], "state": a.get("StateValue", ""),
                   "reason": a.get("StateReason", ""), "metric": a.get("MetricName", "")}
                  for a in found]
        firing = [a["name"] for a in alarms if a["state"] == "ALARM"]
        # no data: its metric emits nothing (an error count with no errors, or no traffic at all)
        blind = [a["name"] for a in alarms if a["state"] == "INSUFFICIENT_DATA"]
        return {"alarms": alarms, "total": len(alarms), "in_alarm": len(firing),
                "in_alarm_names": firing, "insufficient": len(blind), "insufficient_names": blind}
