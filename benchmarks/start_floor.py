"""The task-start floor: the least a middleware costs that asks Redis about every task start.

``StartFloor`` is a middleware of the floor worker (``BENCH_ABORT=start-floor``, no
``AbortMiddleware``): ``pre_execute`` awaits exactly one round trip to Redis, a ``PING`` written
on an asyncio protocol connection opened at start-up and its ``+PONG`` read back. No client
library, no parsing beyond the reply's line end: what any atomic start check pays at the least
(``AbortMiddleware`` makes one such round trip per start, and records and finishes the task).
"""

from __future__ import annotations

import asyncio
import collections
from urllib.parse import urlparse

from taskiq import TaskiqMessage, TaskiqMiddleware


class _Pinger(asyncio.Protocol):
    """One connection; PINGs pipelined, replies matched in order."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n" in self.buffer:
            _, self.buffer = self.buffer.split(b"\r\n", 1)
            self.waiters.popleft().set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        while self.waiters:
            self.waiters.popleft().set_exception(ConnectionError("Redis closed the connection"))

    def ping(self) -> asyncio.Future[None]:
        assert self.transport is not None
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        self.transport.write(b"PING\r\n")
        return waiter


class StartFloor(TaskiqMiddleware):
    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = urlparse(url)
        self.pinger: _Pinger | None = None

    async def startup(self) -> None:
        if self.broker.is_worker_process:
            loop = asyncio.get_running_loop()
            host, port = self.url.hostname or "127.0.0.1", self.url.port or 6379
            _, self.pinger = await loop.create_connection(_Pinger, host, port)
            await self.pinger.ping()

    async def shutdown(self) -> None:
        if self.pinger is not None and self.pinger.transport is not None:
            self.pinger.transport.close()

    async def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        assert self.pinger is not None
        await self.pinger.ping()
        return message
