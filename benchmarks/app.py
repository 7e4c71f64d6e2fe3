"""The application the benchmark workers run: ``taskiq worker benchmarks.app:broker``.

Built from environment variables so that one module serves every variant: ``BENCH_URL``,
``BENCH_PREFIX``, ``BENCH_BROKER`` (``stream`` or ``list``) and ``BENCH_ABORT`` (``1`` adds
``AbortMiddleware``, ``0`` is the bare broker, the baseline, ``floor`` the bare broker with
``benchmarks.cancel_floor.CancelFloor``, the cancellation floors, ``start-floor`` the bare
broker with ``benchmarks.start_floor.StartFloor``, the task-start floor).

Clocks: tasks stamp events with ``CLOCK_MONOTONIC``, which is system-wide on Linux, so a stamp
taken in a worker compares directly with one taken in the benchmark process.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import redis
import redis.asyncio as aredis
from taskiq import AsyncBroker, Context, TaskiqDepends
from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend, RedisStreamBroker

from benchmarks.cancel_floor import CancelFloor
from benchmarks.start_floor import StartFloor
from taskiq_abort import AbortMiddleware


def now() -> float:
    """Seconds on the system-wide monotonic clock (comparable across processes)."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def events_key(prefix: str, task_id: str) -> str:
    return f"{prefix}:ev:{task_id}"


def result_prefix(prefix: str) -> str:
    return f"{prefix}:result"


def make_broker(
    url: str,
    prefix: str,
    kind: str = "stream",
    abort: bool = True,
    floor: bool = False,
    start_floor: bool = False,
    index: tuple[str, ...] = (),
) -> AsyncBroker:
    queue = f"{prefix}:queue"
    inner: AsyncBroker
    if kind == "stream":
        inner = RedisStreamBroker(url, queue_name=queue, consumer_group_name=f"{prefix}:group")
    elif kind == "list":
        inner = ListQueueBroker(url, queue_name=queue)
    else:
        raise ValueError(f"unknown broker kind {kind!r}")
    app = inner.with_result_backend(RedisAsyncResultBackend(url, prefix_str=result_prefix(prefix)))
    if abort:
        interrupt = os.environ.get("BENCH_INTERRUPT") == "1"  # sync bodies (benchmarks/limits.py)
        app = app.with_middlewares(
            AbortMiddleware(url, prefix=prefix, interrupt_threads=interrupt, index_labels=index)
        )
    if floor:
        app = app.with_middlewares(CancelFloor(url, prefix, result_prefix(prefix)))
    if start_floor:
        app = app.with_middlewares(StartFloor(url))
    _define_tasks(app, url, prefix)
    return app


def _define_tasks(broker: AsyncBroker, url: str, prefix: str) -> None:
    state: dict[str, Any] = {"client": None, "pending": set()}

    def client() -> aredis.Redis:
        if state["client"] is None:  # thousands of tasks start at once: wait for a connection
            pool = aredis.BlockingConnectionPool.from_url(url, max_connections=50, timeout=60)
            state["client"] = aredis.Redis(connection_pool=pool)
        return state["client"]  # type: ignore[no-any-return]

    def report_later(task_id: str, event: str, stamp: float) -> None:
        # A task of its own: an aborted task's cancel scope would cancel an await in `finally`.
        task = asyncio.get_running_loop().create_task(
            client().rpush(events_key(prefix, task_id), f"{event} {stamp!r}")
        )
        state["pending"].add(task)
        task.add_done_callback(state["pending"].discard)

    @broker.task(task_name="hold")
    async def hold(
        report: bool = False, count: bool = False, context: Context = TaskiqDepends()
    ) -> str:
        """Runs for an hour unless aborted; reports ``started`` and its ``except`` stamp.

        ``count``: add one to ``<prefix>:running`` once started (how the benchmark knows that N
        background tasks are running, the same way with and without the middleware).
        """
        task_id = context.message.task_id
        if count:
            await client().incr(f"{prefix}:running")
        if report:
            await client().rpush(events_key(prefix, task_id), f"started {now()!r}")
        try:
            await asyncio.sleep(3600)
        except BaseException:
            stamp = now()  # first thing in `except`: the moment the abort reached the body
            if report:
                report_later(task_id, "except", stamp)
            raise
        return "held"

    @broker.task(task_name="hold_named")
    async def hold_named() -> str:
        """Like ``hold``, under another name: the target of aborts by task name."""
        await client().incr(f"{prefix}:running_named")
        await asyncio.sleep(3600)
        return "held"

    @broker.task(task_name="limit_async")
    async def limit_async(context: Context = TaskiqDepends()) -> str:
        """Sleeps until its time limit stops it; reports its start and its stop."""
        task_id = context.message.task_id
        await client().rpush(events_key(prefix, task_id), f"started {now()!r}")
        try:
            await asyncio.sleep(3600)
        finally:
            report_later(task_id, "stopped", now())  # first thing: when the body stopped
        return "unreachable"

    @broker.task(task_name="limit_sync")
    def limit_sync(context: Context = TaskiqDepends()) -> str:
        """A pure-Python loop until its time limit interrupts its thread."""
        started, count = now(), 0
        try:
            while True:
                count += 1
        finally:
            stopped = now()
            sync = redis.Redis.from_url(url)
            sync.rpush(events_key(prefix, context.message.task_id), f"started {started!r}")
            sync.rpush(events_key(prefix, context.message.task_id), f"stopped {stopped!r}")
            sync.close()

    @broker.task(task_name="noop")
    async def noop() -> list[float]:
        """The throughput task: does nothing, returns when it ran and its process's CPU time.

        ``time.process_time()`` is the worker process's utime + stime (what /proc/<pid>/stat
        shows, at nanosecond resolution), so CPU per task comes from the same two tasks as the
        wall-clock window.
        """
        return [now(), time.process_time()]


if "BENCH_URL" in os.environ:
    broker = make_broker(
        os.environ["BENCH_URL"],
        os.environ["BENCH_PREFIX"],
        os.environ.get("BENCH_BROKER", "stream"),
        os.environ.get("BENCH_ABORT", "1") == "1",
        os.environ.get("BENCH_ABORT") == "floor",
        os.environ.get("BENCH_ABORT") == "start-floor",
        tuple(filter(None, os.environ.get("BENCH_INDEX", "").split(","))),
    )
