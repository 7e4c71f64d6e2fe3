"""The Redis control plane (``RedisAbortBackend``): the only package that knows Redis."""

from taskiq_abort.backends.redis.backend import RedisAbortBackend

__all__ = ["RedisAbortBackend"]
