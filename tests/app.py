"""The application the integration tests run in real ``taskiq worker`` processes.

Workers load ``tests.app:broker``, built from environment variables; a test builds its client
with :func:`make_broker` and the same settings. Tasks report what happens to them by pushing to
Redis lists, so tests wait on those events instead of sleeping.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import redis
import redis.asyncio as aredis
from taskiq import AsyncBroker, Context, TaskiqDepends
from taskiq.middlewares import SimpleRetryMiddleware
from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend, RedisStreamBroker

from taskiq_abort import AbortMiddleware, AbortToken, shield

_signals: dict[str, Any] = {}


def events_key(prefix: str, task_id: str) -> str:
    return f"{prefix}:test-events:{task_id}"


async def emit(context: Context, event: str) -> None:
    """Record an event (``started``, ``finally``...) for the test to wait on."""
    prefix = os.environ["TASKIQ_ABORT_TEST_PREFIX"]
    client = _signals.get("async")
    if client is None:
        client = _signals["async"] = aredis.Redis.from_url(os.environ["TASKIQ_ABORT_TEST_URL"])
    await client.rpush(events_key(prefix, context.message.task_id), f"{event} {time.time()}")


def emit_sync(context: Context, event: str) -> None:
    prefix = os.environ["TASKIQ_ABORT_TEST_PREFIX"]
    client = _signals.get("sync")
    if client is None:
        client = _signals["sync"] = redis.Redis.from_url(os.environ["TASKIQ_ABORT_TEST_URL"])
    client.rpush(events_key(prefix, context.message.task_id), f"{event} {time.time()}")


def make_broker(
    url: str, prefix: str, kind: str = "stream", abort_first: bool = False, lease: float = 10.0
) -> AsyncBroker:
    queue = f"{prefix}:queue"
    inner: AsyncBroker
    if kind == "stream":
        inner = RedisStreamBroker(url, queue_name=queue, consumer_group_name=f"{prefix}:group")
    elif kind == "list":
        inner = ListQueueBroker(url, queue_name=queue)
    else:
        raise ValueError(kind)
    abort_mw = AbortMiddleware(url, prefix=prefix, lease=lease)
    retry = SimpleRetryMiddleware(default_retry_count=3)
    middlewares = [abort_mw, retry] if abort_first else [retry, abort_mw]
    broker = inner.with_result_backend(
        RedisAsyncResultBackend(url, prefix_str=f"{prefix}:result")
    ).with_middlewares(*middlewares)
    _define_tasks(broker)
    return broker


def _define_tasks(broker: AsyncBroker) -> None:  # noqa: C901
    @broker.task(task_name="sleeper")
    async def sleeper(seconds: float, context: Context = TaskiqDepends()) -> str:
        await emit(context, "started")
        try:
            await asyncio.sleep(seconds)
        finally:
            await emit(context, "finally")
        return "slept"

    @broker.task(task_name="quick")
    async def quick(value: int, context: Context = TaskiqDepends()) -> int:
        await emit(context, "started")
        return value * 2

    @broker.task(task_name="swallower")
    async def swallower(context: Context = TaskiqDepends()) -> str:
        await emit(context, "started")
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await emit(context, "swallowed")
        return "returned after swallowing"

    @broker.task(task_name="shielded")
    async def shielded(context: Context = TaskiqDepends()) -> str:
        await emit(context, "started")
        async with shield():
            await emit(context, "in-shield")
            await asyncio.sleep(0.3)  # the "commit" an abort must not interrupt
            await emit(context, "committed")
        await asyncio.sleep(60)
        await emit(context, "after-shield")
        return "unreachable"

    @broker.task(task_name="sync_checker")
    def sync_checker(token: AbortToken = TaskiqDepends(), context: Context = TaskiqDepends()) -> str:
        emit_sync(context, "started")
        token.wait_sync(60)
        token.raise_if_aborted()
        return "not aborted"

    @broker.task(task_name="sync_ignorer")
    def sync_ignorer(release_key: str, context: Context = TaskiqDepends()) -> str:
        emit_sync(context, "started")
        client = redis.Redis.from_url(os.environ["TASKIQ_ABORT_TEST_URL"])
        client.blpop([release_key], timeout=60)  # ends when the test says so; never checks
        emit_sync(context, "finished")
        return "ignored the abort"

    @broker.task(task_name="flaky", retry_on_error=True, max_retries=3)
    async def flaky(context: Context = TaskiqDepends()) -> str:
        await emit(context, "started")
        await asyncio.sleep(60)
        raise RuntimeError("never reached")

    @broker.task(task_name="group_sleeper")
    async def group_sleeper(context: Context = TaskiqDepends()) -> str:
        await emit(context, "started")

        async def child(n: int) -> None:
            try:
                await asyncio.sleep(60)
            finally:
                await emit(context, f"child-finally-{n}")

        async with asyncio.TaskGroup() as tg:
            tg.create_task(child(1))
            tg.create_task(child(2))
        return "unreachable"


if "TASKIQ_ABORT_TEST_URL" in os.environ:
    broker = make_broker(
        os.environ["TASKIQ_ABORT_TEST_URL"],
        os.environ["TASKIQ_ABORT_TEST_PREFIX"],
        os.environ.get("TASKIQ_ABORT_TEST_BROKER", "stream"),
        os.environ.get("TASKIQ_ABORT_TEST_ABORT_FIRST") == "1",
        float(os.environ.get("TASKIQ_ABORT_TEST_LEASE", "10")),
    )
