"""The Redis control plane (``RedisAbortBackend``): the only package that knows Redis."""

from taskiq_abort.backends.redis.backend import RedisAbortBackend
from taskiq_abort.backends.redis.connect import safe_url

__all__ = ["RedisAbortBackend", "safe_url"]
