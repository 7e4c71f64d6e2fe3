"""The worker application of tests/test_driver_worker.py: bodies that test how an abort is
delivered, and a middleware between ``AbortMiddleware`` and a retry middleware that records
each of its hooks (each must run exactly once)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

from taskiq import (
    AsyncBroker,
    Context,
    TaskiqDepends,
    TaskiqMessage,
    TaskiqMiddleware,
    TaskiqResult,
)
from taskiq.middlewares import SimpleRetryMiddleware
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from taskiq_abort import AbortMiddleware, shield
from tests.app import emit, events_key, marks


class Recorder(TaskiqMiddleware):
    """Records its hooks in Redis; ``startup`` per worker process, the others per task. Each
    awaits, as real middlewares do (a cancel left pending in the task would land there)."""

    async def _record(self, key: str, hook: str) -> None:
        await asyncio.sleep(0)
        await marks().rpush(key, f"{hook} {os.getpid()}")

    async def startup(self) -> None:
        if self.broker is not None and self.broker.is_worker_process:
            await self._record(events_key(os.environ["TASKIQ_ABORT_TEST_PREFIX"], "startup"), "x")

    async def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        await self._record(_hooks_key(message), "pre_execute")
        return message

    async def on_error(
        self, message: TaskiqMessage, result: TaskiqResult[Any], exception: BaseException
    ) -> None:
        await self._record(_hooks_key(message), "on_error")

    async def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        await self._record(_hooks_key(message), "post_execute")

    async def post_save(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        await self._record(_hooks_key(message), "post_save")


def _hooks_key(message: TaskiqMessage) -> str:
    return events_key(os.environ["TASKIQ_ABORT_TEST_PREFIX"], f"hooks:{message.task_id}")


async def resource(context: Context = TaskiqDepends()) -> AsyncIterator[str]:
    """A generator dependency whose teardown awaits."""
    yield "resource"
    await asyncio.sleep(0)
    await emit(context, "teardown")


def make_driver_broker(url: str, prefix: str) -> AsyncBroker:
    mode = os.environ.get("TASKIQ_ABORT_TEST_CANCEL_MODE", "edge")
    broker = (
        RedisStreamBroker(url, queue_name=f"{prefix}:queue", consumer_group_name=f"{prefix}:g")
        .with_result_backend(RedisAsyncResultBackend(url, prefix_str=f"{prefix}:result"))
        .with_middlewares(
            AbortMiddleware(url, prefix=prefix, cancel_mode="level" if mode == "level" else "edge"),
            Recorder(),
            SimpleRetryMiddleware(default_retry_count=3),
        )
    )

    @broker.task(task_name="shield_last")
    async def shield_last(
        context: Context = TaskiqDepends(), res: str = TaskiqDepends(resource)
    ) -> str:
        """Its last step is shielded: an abort landing there finds nothing left to stop."""
        async with shield():
            await emit(context, "in-shield")
            await asyncio.sleep(0.3)
        return "committed"

    @broker.task(task_name="absorbing_child")
    async def absorbing_child(how: str, context: Context = TaskiqDepends()) -> str:
        """Awaits a child task that turns the cancellation into a return or an error."""

        async def child() -> str:
            try:
                await emit(context, "started")  # the abort may land once the child runs
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                await emit(context, "child-absorbed")
                if how == "raise":
                    raise RuntimeError("the child failed instead") from None
            return "child"

        try:
            await asyncio.create_task(child())
        except Exception:
            await emit(context, "caught-child-error")
        await asyncio.sleep(0.3)
        await emit(context, "last-line")
        return "ran on"

    @broker.task(task_name="agen_cleanup")
    async def agen_cleanup(context: Context = TaskiqDepends()) -> str:
        """Suspended inside an async generator whose ``finally`` awaits its clean-up."""

        async def numbers() -> AsyncIterator[int]:
            try:
                yield 1
                # Reported from inside the generator: an abort that lands while it is being
                # reported must land within this ``try`` too.
                await emit(context, "started")
                await asyncio.sleep(60)
                yield 2
            finally:
                await asyncio.sleep(0.05)
                await asyncio.sleep(0)
                await emit(context, "generator-cleaned-up")

        agen = numbers()
        await agen.__anext__()
        await agen.__anext__()
        return "unreachable"

    @broker.task(task_name="recorded", retry_on_error=True, max_retries=3)
    async def recorded(context: Context = TaskiqDepends()) -> str:
        await emit(context, "started")
        await asyncio.sleep(60)
        return "unreachable"

    return broker


if "TASKIQ_ABORT_TEST_URL" in os.environ:
    broker = make_driver_broker(
        os.environ["TASKIQ_ABORT_TEST_URL"], os.environ["TASKIQ_ABORT_TEST_PREFIX"]
    )
