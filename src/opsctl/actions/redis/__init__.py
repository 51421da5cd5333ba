"""Redis actions, split by concern: ``read`` (INFO, slowlog, clients, big keys, one key, the write
probe) and ``mutate`` (set / delete keys, kill clients, CONFIG SET, each with a live plan)."""

from opsctl.actions.redis import mutate, read
from opsctl.actions.redis.common import RedisAction

__all__ = ["RedisAction", "mutate", "read"]
