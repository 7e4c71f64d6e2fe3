"""Simulated fleet workers: ``python3 -m benchmarks.fleet_worker URL PREFIX COUNT READY_KEY``.

``COUNT`` ``InMemoryBroker``s in this one process, each with its own ``AbortMiddleware(URL,
prefix=PREFIX)``. An ``InMemoryBroker`` runs tasks in-process, so the middleware treats it as a
worker: each one registers a worker and subscribes to the control channel, as a real worker
process does. Only the public API is used, so this keeps working when the internals change.

Pushes ``COUNT`` on ``READY_KEY`` once every broker has started; shuts them down on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

import redis.asyncio as aredis
from taskiq import AsyncBroker, InMemoryBroker

from benchmarks.procs import raise_fd_limit
from taskiq_abort import AbortMiddleware

_STARTUP_CHUNK = 25  # brokers started at once
_FDS_PER_WORKER = 4  # command connection(s) and the subscription's, with room to spare


async def serve(url: str, prefix: str, count: int, ready_key: str) -> None:
    raise_fd_limit(count * _FDS_PER_WORKER + 256)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    brokers: list[AsyncBroker] = [
        InMemoryBroker().with_middlewares(AbortMiddleware(url, prefix=prefix)) for _ in range(count)
    ]
    for start in range(0, count, _STARTUP_CHUNK):
        await asyncio.gather(*(b.startup() for b in brokers[start : start + _STARTUP_CHUNK]))
    r = aredis.Redis.from_url(url)
    try:
        await r.rpush(ready_key, str(count))
    finally:
        await r.aclose()
    await stop.wait()
    with contextlib.suppress(asyncio.TimeoutError):  # deregister; the lease covers the rest
        await asyncio.wait_for(asyncio.gather(*(b.shutdown() for b in brokers)), 20)


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]))
