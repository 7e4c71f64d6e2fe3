"""Module-level sync tasks for ``taskiq worker --use-process-pool`` (which pickles task
functions by reference, so they must live at module level, and their arguments by value)."""

from __future__ import annotations

import os

from taskiq import TaskiqDepends
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from taskiq_abort import AbortMiddleware, AbortToken

_URL = os.environ.get("TASKIQ_ABORT_TEST_URL", "redis://127.0.0.1:1/0")
_PREFIX = os.environ.get("TASKIQ_ABORT_TEST_PREFIX", "pool")

broker = (
    RedisStreamBroker(_URL, queue_name=f"{_PREFIX}:pool-queue")
    .with_result_backend(RedisAsyncResultBackend(_URL, prefix_str=f"{_PREFIX}:result"))
    .with_middlewares(AbortMiddleware(_URL, prefix=_PREFIX))
)


@broker.task(task_name="pool_add_one")
def add_one(x: int) -> int:
    return x + 1


def _work(release_key: str, chunk: int) -> None:
    """One chunk of work: with a ``release_key``, report it started and wait for the test."""
    if not release_key:
        return
    import redis

    client = redis.Redis.from_url(_URL, socket_timeout=None)
    try:
        client.rpush(f"{release_key}:started", str(chunk))
        client.blpop([release_key], timeout=60)
    finally:
        client.close()


@broker.task(task_name="pool_crunch")
def crunch(n: int, release_key: str = "", token: AbortToken = TaskiqDepends()) -> int:
    """The token pattern of docs/usage.md, run in a child process by ``--use-process-pool``."""
    for chunk in range(n):
        token.raise_if_aborted()
        _work(release_key, chunk)
    return n
