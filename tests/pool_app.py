"""A module-level sync task for ``taskiq worker --use-process-pool`` (which pickles task
functions by reference, so they must live at module level)."""

from __future__ import annotations

import os

from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from taskiq_abort import AbortMiddleware

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
