"""CloudWatch: metric statistics and alarm states, mostly for diagnose and verify steps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from opsctl.actions import register
from opsctl.actions.base import Action, type_schema
from opsctl.actions.needs import Iam
from opsctl.backends.aws import aws_errors, client

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
        dimensions: {DBClusterIdentifier: plooral-aurora}
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
    """CloudWatch alarms and their state, by names or name prefix.

    ```yaml
    - id: alarms
      action: aws.cloudwatch.alarms
      with: {names: [PlooralWorkerFailure]}
      expect:
        - that: "result.in_alarm == 0"
          severity: warning
          message: "in ALARM: {{ result.in_alarm_names | join(', ') }}"
    ```
    """

    name = "aws.cloudwatch.alarms"
    permissions = (Iam(("cloudwatch:DescribeAlarms",)),)
    backend = "aws"
    summary = "alarm states (OK / ALARM / INSUFFICIENT_DATA)"
    schema = type_schema({"names": {"type": "array", "items": {"type": "string"}},
                          "prefix": {"type": "string"}})

    def run(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if self.args.get("names"):
            kwargs["AlarmNames"] = list(self.args["names"])
        elif self.args.get("prefix"):
            kwargs["AlarmNamePrefix"] = self.args["prefix"]
        with aws_errors("describe alarms"):
            pages = client(self.ctx, "cloudwatch").get_paginator("describe_alarms").paginate(**kwargs)
            found = [a for page in pages for a in page.get("MetricAlarms", [])]
        alarms = [{"name": a["AlarmName"], "state": a.get("StateValue", ""),
                   "reason": a.get("StateReason", ""), "metric": a.get("MetricName", "")}
                  for a in found]
        firing = [a["name"] for a in alarms if a["state"] == "ALARM"]
        return {"alarms": alarms, "total": len(alarms), "in_alarm": len(firing),
                "in_alarm_names": firing}
