"""Shared pieces of the fault, load, chaos and security tests.

Everything waits on a condition with a deadline (registry polling, worker log lines, BLPOP
events); the only time limits are generous "bounded time" upper bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import redis
from taskiq import AsyncBroker

from taskiq_abort import find_middleware
from taskiq_abort.outcome import WorkerInfo
from tests.app import make_broker
from tests.conftest import WorkerProcess
from tests.support.redis_servers import RedisServer

_T = TypeVar("_T")


def poll(predicate: Callable[[], _T], timeout: float, what: str, interval: float = 0.05) -> _T:
    """Return the first truthy ``predicate()``; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)  # polling state another process writes; there is no event


async def apoll(
    predicate: Callable[[], Awaitable[_T]], timeout: float, what: str, interval: float = 0.05
) -> _T:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)  # polling the registry; there is no event to wait on


@contextlib.contextmanager
def own_server(extra: list[str] | None = None) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which it may stop, kill, pause or restart."""
    server = RedisServer(extra=extra)
    try:
        server.start()  # inside the try: a server that fails its start-up check is still stopped
        yield server
    finally:
        if server.proc is not None:  # a SIGSTOPped server ignores SIGTERM until continued
            with contextlib.suppress(ProcessLookupError):
                os.kill(server.proc.pid, signal.SIGCONT)
        server.cleanup()


@contextlib.asynccontextmanager
async def started(broker: AsyncBroker) -> AsyncIterator[AsyncBroker]:
    """``broker``, started; shut down (in bounded time) afterwards."""
    await broker.startup()
    try:
        yield broker
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(broker.shutdown(), 10)


@contextlib.asynccontextmanager
async def client_broker(
    url: str, prefix: str, kind: str = "stream", **kwargs: Any
) -> AsyncIterator[AsyncBroker]:
    async with started(make_broker(url, prefix, kind, **kwargs)) as broker:
        yield broker


def worker_log(worker: WorkerProcess) -> str:
    return worker.log.read_text(errors="replace") if worker.log.exists() else ""


def wait_log(worker: WorkerProcess, needle: str, timeout: float = 30.0, count: int = 1) -> str:
    """Wait until the worker's log holds ``needle`` at least ``count`` times."""
    return poll(
        lambda: (log := worker_log(worker)).count(needle) >= count and log,
        timeout,
        f"{needle!r} x{count} in {worker.log}",
    )


async def held(broker: AsyncBroker) -> dict[str, str]:
    """task id -> task name of everything the live workers hold, from the registry."""
    infos: list[WorkerInfo] = await find_middleware(broker).backend.workers()
    return {entry.task_id: entry.task_name for info in infos for entry in info.tasks}


def rss_of(pid: int) -> int:
    """Resident set size of a process in bytes, from /proc."""
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rclient_for(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


@contextlib.contextmanager
def spawn(url: str, prefix: str, *, ready: bool = True, **kwargs: Any) -> Iterator[WorkerProcess]:
    """A worker process on any server (``worker_factory`` only knows the session one)."""
    worker = WorkerProcess(url, prefix, **kwargs)
    try:
        worker.start(wait=ready)
        yield worker
    except BaseException:
        print(f"--- {worker.log} ---\n{worker_log(worker)[-4000:]}")  # shown when a test fails
        raise
    finally:
        worker.stop()
