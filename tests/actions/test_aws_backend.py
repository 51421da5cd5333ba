"""AWS client set-up: configuration sources and the errors opsctl reports (exit 4, one paragraph)."""

from __future__ import annotations

import pytest

from opsctl.actions.aws.cloudwatch import Alarms, Metric
from opsctl.actions.aws.sqs import QueueStats
from opsctl.actions.base import ActionContext
from opsctl.config import Environment
from opsctl.errors import ActionError, BackendError
from tests.fixtures.aws import REGION, Moto
from tests.fixtures.core import free_port

pytestmark = pytest.mark.aws


def ctx(**aws: str) -> ActionContext:
    return ActionContext(environment=Environment(name="t", backends={"aws": aws}))


def test_endpoint_from_the_environment_variable(moto: Moto) -> None:
    moto.client("sqs").create_queue(QueueName="via-env")
    got = QueueStats({"queue": "via-env"}, ctx()).run()  # no endpoint in the config: AWS_ENDPOINT_URL
    assert got["queue"]["name"] == "via-env"


def test_config_section_wins_over_the_environment(moto: Moto, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens
    moto.client("sqs").create_queue(QueueName="via-config")
    got = QueueStats({"queue": "via-config"}, ctx(endpoint_url=moto.endpoint, region=REGION)).run()
    assert got["visible"] == 0


def test_unreachable_endpoint_is_a_backend_error(moto: Moto) -> None:
    with pytest.raises(BackendError, match="cannot reach the AWS endpoint") as e:
        QueueStats({"queue": "q"}, ctx(endpoint_url=f"http://127.0.0.1:{free_port()}")).run()
    assert "Traceback" not in str(e.value)


def test_missing_credentials_is_a_backend_error(moto: Moto, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(BackendError, match="no AWS credentials found"):
        QueueStats({"queue": "q"}, ctx()).run()


def test_unknown_profile_is_a_backend_error(moto: Moto) -> None:
    with pytest.raises(BackendError, match="config profile \\(nope\\) could not be found"):
        QueueStats({"queue": "q"}, ctx(profile="nope")).run()


def test_missing_region_is_a_backend_error(moto: Moto, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(BackendError, match="no region configured"):
        QueueStats({"queue": "q"}, ctx()).run()


def test_aws_region_alone_is_enough(moto: Moto, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")  # botocore itself only reads this one
    moto.client("sqs").create_queue(QueueName="regional")
    assert QueueStats({"queue": "regional"}, ctx()).run()["queue"]["name"] == "regional"


def test_unknown_queue_is_an_action_error(moto: Moto) -> None:
    with pytest.raises(ActionError, match="NonExistentQueue|QueueDoesNotExist"):
        QueueStats({"queue": "ghost"}, ctx()).run()


def test_metric_statistics_and_no_data(moto: Moto, aws_ctx: ActionContext) -> None:
    cw = moto.client("cloudwatch")
    dims = [{"Name": "DBClusterIdentifier", "Value": "c1"}]
    cw.put_metric_data(Namespace="AWS/RDS", MetricData=[
        {"MetricName": "CPUUtilization", "Value": v, "Dimensions": dims} for v in (40.0, 95.0)])
    got = Metric({"namespace": "AWS/RDS", "metric": "CPUUtilization",
                  "dimensions": {"DBClusterIdentifier": "c1"}, "statistic": "Maximum"}, aws_ctx).run()
    assert (got["max"], got["datapoints"]) == (95.0, 1)
    empty = Metric({"namespace": "AWS/RDS", "metric": "CPUUtilization",
                    "dimensions": {"DBClusterIdentifier": "other"}}, aws_ctx).run()
    assert (empty["datapoints"], empty["max"]) == (0, None)


def test_alarms_in_alarm(moto: Moto, aws_ctx: ActionContext) -> None:
    cw = moto.client("cloudwatch")
    for name in ("AuroraCPUCritical", "AuroraFreeStorageLow"):
        cw.put_metric_alarm(AlarmName=name, Namespace="AWS/RDS", MetricName="CPUUtilization",
                            Statistic="Average", Period=60, EvaluationPeriods=1, Threshold=90,
                            ComparisonOperator="GreaterThanThreshold")
    cw.set_alarm_state(AlarmName="AuroraCPUCritical", StateValue="ALARM", StateReason="test")
    got = Alarms({"prefix": "Aurora"}, aws_ctx).run()
    assert (got["total"], got["in_alarm_names"]) == (2, ["AuroraCPUCritical"])


def test_a_non_aws_error_page_is_a_backend_error(moto: Moto) -> None:
    # an endpoint answering with an HTML error page (here moto for a region that does not exist; a
    # proxy or a wrong endpoint_url does the same) used to surface as an "internal error" with a
    # botocore ResponseParserError (RDS, XML protocol) or as "500: (no message)" (CloudWatch)
    from opsctl.actions.aws.rds import Describe

    bad = ctx(endpoint_url=moto.endpoint, region="eu-west-9")
    with pytest.raises(BackendError, match=r"did not answer like AWS \(500 Internal Server Error\)"):
        Describe({"cluster": "c"}, bad).run()
    with pytest.raises(BackendError, match=r"did not answer like AWS \(HTTP 500 without an AWS error\)"):
        Metric({"namespace": "AWS/RDS", "metric": "CPUUtilization"}, bad).run()


@pytest.mark.parametrize("left", [0.2, 1.0, 5.0, 12.0, 30.0, 60.0, 120.0, 1800.0])
def test_every_attempt_of_a_call_fits_in_the_step_deadline(left: float) -> None:
    # a hung endpoint must cost at most the step's deadline: (connect + read) x attempts <= left
    # (0.5 s is the floor for a step that is already out of time: it fails at once after it)
    from opsctl.backends.aws import call_budget

    connect, read, attempts = call_budget({}, left)
    assert attempts >= 1 and connect <= read <= 20.0
    assert (connect + read) * attempts <= max(left, 0.5 * 2)
    assert call_budget({"read_timeout": 2}, left)[1] <= 2.0  # aws.read_timeout lowers the cap


def test_no_deadline_keeps_the_default_budget() -> None:
    from opsctl.backends.aws import call_budget

    assert call_budget({}, None) == (3.0, 20.0, 3)
