"""2b. The trickle regime (``trickle``): tasks arrive one at a time at a worker already running.

Per run: a fresh ``taskiq worker --workers 1`` (one of the variants of benchmarks/throughput.py:
without ``AbortMiddleware``, with it, or the task-start floor), ``warmup``
no-op tasks to get it going, then ``trickle_tasks`` no-op tasks kicked one after another, each
kicked once the previous one's result is stored. The benchmark learns that from a Redis keyspace
notification on the result key (``notify-keyspace-events K$``, switched on for this benchmark
and restored after), so it does not poll; with a Redis that refuses ``CONFIG SET`` it polls
``EXISTS`` every millisecond instead.

Worker CPU: utime + stime of the worker's child processes from /proc/<pid>/stat, read once the
last warm-up result is stored and once the last result is stored; divided by the tasks.
Throughput: tasks divided by the same window's wall-clock time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import redis
from redis.asyncio.client import PubSub
from taskiq import AsyncBroker

from benchmarks.app import now, result_prefix
from benchmarks.procs import Worker, total_cpu_seconds
from benchmarks.session import Bench
from benchmarks.throughput import Run, alternate, start_worker


class ResultWatch:
    """Waits for one result key to be written: keyspace notification, or polling."""

    def __init__(self, bench: Bench, prefix: str, worker: Worker, notify: bool) -> None:
        self.bench, self.worker, self.notify = bench, worker, notify
        self.key_prefix = f"{result_prefix(prefix)}:"
        db = bench.r.connection_pool.connection_kwargs.get("db", 0)
        self.channel_prefix = f"__keyspace@{db}__:{self.key_prefix}"
        self.pubsub: PubSub | None = None

    async def __aenter__(self) -> ResultWatch:
        if self.notify:
            self.pubsub = self.bench.r.pubsub()
            await self.pubsub.psubscribe(f"{self.channel_prefix}*")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.pubsub is not None:
            await self.pubsub.aclose()  # type: ignore[no-untyped-call]

    async def kick_and_wait(self, task: Any, timeout: float = 60) -> float:
        """Kick ``task``, return the monotonic time at which its result was seen stored."""
        handle = await task.kiq()
        deadline = time.monotonic() + timeout
        if self.pubsub is None:
            key = self.key_prefix + handle.task_id
            while not await self.bench.r.exists(key):
                self._check(deadline, handle.task_id)
                await asyncio.sleep(0.001)
            return now()
        channel = self.channel_prefix + handle.task_id
        while True:
            msg = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg is not None and msg["channel"] == channel:
                return now()
            self._check(deadline, handle.task_id)

    def _check(self, deadline: float, task_id: str) -> None:
        self.worker.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"trickle: no result for {task_id}")


async def measure(bench: Bench, prefix: str, worker: Worker, notify: bool, task: Any) -> Run:
    """``warmup`` kicks (the first also waits for the worker to start), then ``trickle_tasks``
    kicks one after another: the worker's CPU and the wall-clock time over those."""
    async with ResultWatch(bench, prefix, worker, notify) as watch:
        for _ in range(bench.p.warmup):
            await watch.kick_and_wait(task)
        pids = worker.children()
        cpu0, t0 = total_cpu_seconds(pids), now()
        t1 = t0
        for _ in range(bench.p.trickle_tasks):
            t1 = await watch.kick_and_wait(task)
        cpu1 = total_cpu_seconds(pids)
    return Run(t1 - t0, cpu1 - cpu0)


@contextlib.asynccontextmanager
async def keyspace_notifications(bench: Bench, label: str) -> AsyncIterator[bool]:
    """Redis notifies result writes while this lasts (the setting is restored after); ``False``
    when it refuses ``CONFIG SET``: results are polled for then."""
    old: str | None = None
    try:
        current = (await bench.r.config_get("notify-keyspace-events"))["notify-keyspace-events"]
        await bench.r.config_set("notify-keyspace-events", "K$")
        old = current
    except redis.ResponseError:
        bench.log(f"  {label}: CONFIG SET refused; polling for results instead")
    try:
        yield old is not None
    finally:
        if old is not None:
            with contextlib.suppress(redis.RedisError):
                await bench.r.config_set("notify-keyspace-events", old)


async def trickle_run(bench: Bench, kind: str, variant: str, notify: bool) -> Run:
    await bench.r.flushdb()
    prefix = f"tr{uuid.uuid4().hex[:6]}"
    broker: AsyncBroker = await bench.client(prefix, kind, abort=False)
    worker = start_worker(bench, prefix, kind, variant)
    try:
        return await measure(bench, prefix, worker, notify, broker.find_task("noop"))
    finally:
        await broker.shutdown()
        worker.stop()


async def run(bench: Bench) -> dict[str, Any]:
    p = bench.p
    async with keyspace_notifications(bench, "trickle") as notify:

        def one(kind: str, variant: str) -> Awaitable[Run]:
            return trickle_run(bench, kind, variant, notify=notify)

        out = await alternate(
            bench, "trickle", p.trickle_rounds, p.trickle_tasks, p.trickle_tasks, one
        )
    for summary in out.values():
        summary["result_wait"] = "keyspace notification" if notify else "polling"
    return out
