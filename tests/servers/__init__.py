"""Moved to the shipped rehearsal kit, ``opsctl.testing`` (issue 15).

These modules are thin re-exports kept only so that tests written against ``tests.servers`` keep
working while branches merge; import from ``opsctl.testing`` in new code.
"""

from opsctl.testing.postgres import PgServer, start_postgres
from opsctl.testing.redis import RedisServer, start_redis

__all__ = ["PgServer", "RedisServer", "start_postgres", "start_redis"]
