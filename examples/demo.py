"""A self-contained demo: ``python3 -m examples.demo``, from the repository's root.

Starts a throwaway redis-server and a real ``taskiq worker`` process, then, from this process,
starts long tasks and aborts them, printing how long each abort took. Needs taskiq-redis
(``pip install -e '.[dev]'``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from taskiq import AsyncBroker, Context, TaskiqDepends

from taskiq_abort import AbortableTask, AbortMiddleware, AbortStatus, TaskAbortedError
from taskiq_abort._wire.keys import KeySpace
from tests.support.redis_servers import RedisServer

_URL_ENV = "TASKIQ_ABORT_DEMO_URL"
_PREFIX = "taskiq_abort_demo"
_APP = "examples.demo:broker"  # what the worker process imports


def make_broker(url: str) -> AsyncBroker:
    from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

    broker = (
        RedisStreamBroker(url, queue_name=f"{_PREFIX}:queue")
        .with_result_backend(RedisAsyncResultBackend(url, prefix_str=f"{_PREFIX}:result"))
        .with_middlewares(AbortMiddleware(url, prefix=_PREFIX))
    )

    @broker.task(task_name="crunch")
    async def crunch(seconds: float, context: Context = TaskiqDepends()) -> str:
        """A long task: it reports when it starts and when its ``finally`` block runs."""
        redis = context.state.demo_redis
        key = f"{_PREFIX}:events:{context.message.task_id}"
        await redis.rpush(key, f"started {time.monotonic()}")
        try:
            await asyncio.sleep(seconds)  # stands for real work: HTTP calls, queries...
        finally:
            # CLOCK_MONOTONIC is system-wide on Linux: comparable across processes.
            await redis.rpush(key, f"finally {time.monotonic()}")
        return "finished normally"

    from taskiq import TaskiqEvents, TaskiqState

    @broker.on_event(TaskiqEvents.WORKER_STARTUP)
    async def _connect(state: TaskiqState) -> None:
        from redis.asyncio import Redis

        state.demo_redis = Redis.from_url(url)

    return broker


if _URL_ENV in os.environ:  # the worker process imports this module
    broker = make_broker(os.environ[_URL_ENV])


async def _wait_event(redis: Any, task_id: str, event: str) -> float:
    key = f"{_PREFIX}:events:{task_id}"
    while True:
        _, item = await redis.blpop([key], timeout=30) or (None, None)
        if item is None:
            raise TimeoutError(f"task {task_id} never reported {event!r}")
        name, stamp = item.decode().split(" ")
        if name == event:
            return float(stamp)


async def _run(url: str, rounds: int) -> None:
    from redis.asyncio import Redis

    client = make_broker(url)
    await client.startup()
    redis = Redis.from_url(url)
    middleware = client.middlewares[0]
    assert isinstance(middleware, AbortMiddleware)
    crunch = client.find_task("crunch")
    assert crunch is not None
    try:
        print("\n1) A running task, aborted from this process (the worker is another one).")
        print("   broker.startup() prepared the aborter (connection, scripts, reply channel).")
        task = AbortableTask.of(await crunch.kiq(3600), client)  # typed as AbortableTask
        await _wait_event(redis, task.task_id, "started")
        for worker in await middleware.backend.workers():
            for entry in worker.tasks:
                print(f"   running: {entry.task_id} ({entry.task_name}) on {worker.worker_id}")
        called = time.monotonic()
        outcome = await task.abort(reason="user pressed stop")
        returned = time.monotonic()
        cleaned = await _wait_event(redis, task.task_id, "finally")
        result = await task.wait_result(timeout=5)
        assert isinstance(result.error, TaskAbortedError)
        print(f"   abort() -> {outcome.status.value} by {outcome.worker}")
        print(f"   task's finally block ran {1000 * (cleaned - called):.2f} ms after abort()")
        print(f"   abort() returned after   {1000 * (returned - called):.2f} ms")
        print(f"   stored result: {type(result.error).__name__}: {result.error}")

        print("\n2) A task nobody has started yet is revoked, and its result stored at once:")
        queued_id = "demo-not-started-yet"
        outcome = await middleware.abort(queued_id, reason="not needed any more")
        print(f"   abort() -> {outcome.status.value}; a worker that picks it up skips it")

        print(f"\n3) {rounds} more running tasks aborted one by one:")
        to_finally, to_return = [], []
        for _ in range(rounds):
            task = AbortableTask.of(await crunch.kiq(3600), client)
            await _wait_event(redis, task.task_id, "started")
            called = time.monotonic()
            outcome = await task.abort()
            to_return.append(time.monotonic() - called)
            to_finally.append(await _wait_event(redis, task.task_id, "finally") - called)
            assert outcome.status is AbortStatus.ABORTED
        for label, values in (("finally ran", to_finally), ("abort() returned", to_return)):
            ms = sorted(1000 * v for v in values)  # too few for a p99: benchmarks/ has those
            print(f"   {label:<17} median {statistics.median(ms):.2f} ms, max {ms[-1]:.2f} ms")
    finally:
        await redis.aclose()
        await client.shutdown()


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    # taskiq warns that an error result does not parse as the task's return type: expected here.
    logging.getLogger("taskiq.task").setLevel(logging.ERROR)
    server = RedisServer().start()
    print(f"throwaway Redis: {server.binary} on {server.url}")
    env = {**os.environ, _URL_ENV: server.url}
    log = Path(server.dir) / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "taskiq", "worker", _APP, "--workers", "1"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        client = server.client()
        deadline = time.monotonic() + 30
        while not client.zcard(KeySpace(_PREFIX).workers):  # registered once it listens
            if worker.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                print(f"the worker did not start; its log:\n{tail}", file=sys.stderr)
                return 1
            time.sleep(0.05)
        print(f"worker process pid {worker.pid} is listening")
        asyncio.run(_run(server.url, rounds))
        return 0
    finally:
        os.killpg(worker.pid, 9)
        worker.wait()
        server.cleanup()


if __name__ == "__main__":
    sys.exit(main())
