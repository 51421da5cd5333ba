"""Private PostgreSQL and Redis servers on free ports in temp dirs, for tests and the demo.

Each server is a real process started from the locally installed binaries and stopped by its PID;
nothing touches the shared instances on the standard ports.
"""

from tests.servers.postgres import PgServer, start_postgres
from tests.servers.redis import RedisServer, start_redis

__all__ = ["PgServer", "RedisServer", "start_postgres", "start_redis"]
