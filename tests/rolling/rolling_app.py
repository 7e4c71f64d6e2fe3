"""A minimal application that only uses what every release offers: it runs under the previous
release of taskiq-abort and under this one, so that a worker of one and an aborter of the other
can be paired (tests/test_rolling_deploy.py). Copied next to nothing else, so that the Python that
runs it imports its own installed taskiq_abort, not this source tree."""

from __future__ import annotations

import asyncio
import os

import redis.asyncio as aredis
from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend

import taskiq_abort
from taskiq_abort import AbortMiddleware

URL = os.environ["ROLLING_URL"]
PREFIX = os.environ["ROLLING_PREFIX"]

# Indexed labels where the release has them: its registry entries carry them in the run token.
_labels = {"index_labels": ("tenant",)} if hasattr(taskiq_abort, "abort_where") else {}
abort_middleware = AbortMiddleware(URL, prefix=PREFIX, **_labels)

broker = (
    ListQueueBroker(URL, queue_name=f"{PREFIX}:queue", socket_timeout=None)
    .with_result_backend(RedisAsyncResultBackend(URL))
    .with_middlewares(abort_middleware)
)


@broker.task(task_name="rolling:sleeper")
async def sleeper(name: str) -> str:
    client = aredis.from_url(URL)
    try:
        await client.rpush(f"{PREFIX}:started", name)
    finally:
        await client.aclose()
    await asyncio.sleep(60)
    return "ran to its end"
