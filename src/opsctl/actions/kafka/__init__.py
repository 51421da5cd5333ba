"""Kafka actions, split by concern: ``lag`` (consumer lag, lag trend), ``topics`` (description, DLQ
depth, peek), ``volume`` (DLQ share of the source's traffic, DLQs found by name), ``connectivity``
(brokers judged at the protocol level), ``redrive`` (DLQ -> source, exactly-once across
interruptions), ``campaign`` (its marker and status), ``consumed`` (do the application's groups read
the redriven records, or do they fail again) and ``offsets`` (consumer-group offset reset).

Every lookup is batched: one OffsetFetch for all of a group's partitions and one ListOffsets per
partition leader, never a request per partition (see bench/kafka_lag_1000_partitions.py).
opsctl never joins the groups it inspects or changes: it reads with group-less consumers and
commits through the admin API, which Kafka only accepts while the group has no active members.
"""

from opsctl.actions.kafka import (  # noqa: F401 - registers
    campaign,
    connectivity,
    consumed,
    lag,
    offsets,
    redrive,
    topics,
    volume,
)
from opsctl.actions.kafka.campaign import RedriveStatus
from opsctl.actions.kafka.common import REDRIVEN_HEADER
from opsctl.actions.kafka.connectivity import Brokers
from opsctl.actions.kafka.consumed import RedriveConsumed
from opsctl.actions.kafka.lag import Lag, LagTrend
from opsctl.actions.kafka.offsets import ResetOffsets
from opsctl.actions.kafka.redrive import Redrive
from opsctl.actions.kafka.topics import DescribeTopic, DlqDepth, Peek

__all__ = ["REDRIVEN_HEADER", "Brokers", "DescribeTopic", "DlqDepth", "Lag", "LagTrend", "Peek", "Redrive",
           "RedriveConsumed", "RedriveStatus", "ResetOffsets"]
