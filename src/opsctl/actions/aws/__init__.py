"""AWS actions (boto3): RDS/Aurora, SQS, ECS, Lambda, CloudWatch.  Clients come from
``opsctl.backends.aws``; boto3 is imported only when a step runs."""

from __future__ import annotations

from opsctl.actions.aws import cloudwatch, ecs, lambda_, rds, rds_capacity, redrive, sqs

__all__ = ["cloudwatch", "ecs", "lambda_", "rds", "rds_capacity", "redrive", "sqs"]
