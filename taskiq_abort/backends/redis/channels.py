"""The Redis backend's pub/sub side: a worker's control channel, an aborter's reply channel.

:class:`Channels` is held by :class:`~taskiq_abort.backends.redis.RedisAbortBackend`, which
gives it the connections of the running event loop and the waiters to deliver replies to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio.client import PubSub

from taskiq_abort._wire.keys import KeySpace
from taskiq_abort._wire.protocol import ReplyMessage, parse_aborts, parse_replies
from taskiq_abort.backends.base import (
    AbortHandler,
    AbortNotice,
    RequestRecord,
    ResyncHook,
)
from taskiq_abort.backends.redis.clients import LoopClients
from taskiq_abort.backends.redis.connect import Topology
from taskiq_abort.backends.redis.subscription import subscription
from taskiq_abort.observability import events

logger = logging.getLogger("taskiq_abort")

SUBSCRIBE_WAIT = 0.5


def from_record(task_id: str, record: RequestRecord | None) -> ReplyMessage | None:
    """What the durable record says to an aborter waiting for ``task_id``'s reply: nothing yet
    (``None``), or a reply with no worker named, the word for the whole task."""
    if record is None:  # gone (a failover, an expiry): settle it from the result
        return ReplyMessage(task_id, "unknown", "")
    if record.outcome == "finished":
        return ReplyMessage(task_id, "finished", "")
    if record.outcome in ("aborted", "revoked"):
        # "revoked" here: a worker refused the attempt it had just shown as running.
        return ReplyMessage(task_id, "aborted", "", record.forced)
    return None


async def _yield() -> None:
    """Let what a message woke (a cancelled task body, an ``abort()`` waiting for its reply)
    run before the listener reads on: those are what the message is for."""
    await asyncio.sleep(0)


class Channels:
    """The control channels (a worker's) and the reply channel (this process's, as an aborter)
    of one backend."""

    def __init__(
        self,
        keys: KeySpace,
        topology: Topology,
        timeout: float,
        reply_channel: str,
        clients: Callable[[], LoopClients],
        deliver: Callable[[ReplyMessage], None],
    ) -> None:
        self.keys = keys
        self.topology = topology
        self.timeout = timeout
        self.reply_channel = reply_channel
        self._clients = clients  # the running loop's (see ``RedisAbortBackend._c``)
        self._deliver = deliver  # to the waiters of the reply's task id
        self.malformed_messages = 0
        self._reply_task: asyncio.Task[None] | None = None
        # Set once the reply subscription works, or has failed once (then we poll instead).
        self._reply_settled: asyncio.Event | None = None

    # --- worker: the control channel -------------------------------------------------
    async def listen(self, worker_id: str, handler: AbortHandler, resync: ResyncHook) -> None:
        channel = self.keys.worker_channel(worker_id)
        async for message in self._subscription(channel, resync, "control"):
            parsed = parse_aborts(message)  # `abort`, or `abort_many` from a bulk abort
            if parsed is None:
                self._count_malformed(channel, message)
                continue
            for one in parsed:
                notice = AbortNotice(one.task_id, one.reason, one.reply_to, one.at, one.grace)
                events.request_seen(one.task_id, one.at or None, None)
                try:
                    handler(notice)
                except Exception:  # a bug in a handler must not end the listener
                    logger.exception("taskiq-abort: handling abort of %s failed", one.task_id)
            await _yield()

    def _count_malformed(self, channel: str, message: bytes) -> None:
        self.malformed_messages += 1
        events.malformed_message()
        if self.malformed_messages == 1 or self.malformed_messages % 1000 == 0:
            logger.warning(
                "taskiq-abort: ignored %d malformed control message(s) on %s (latest: %r)",
                self.malformed_messages,
                channel,
                message[:80],
            )

    def _subscription(
        self,
        channel: str,
        on_subscribed: ResyncHook,
        role: str,
        on_error: Any = None,
    ) -> Any:
        def open_pubsub(fresh: bool) -> Awaitable[PubSub]:
            return self.topology.pubsub(self._clients().cmd, channel, self.timeout, fresh)

        return subscription(
            open_pubsub,
            channel,
            on_subscribed,
            role=role,
            where=self.topology.where,
            confirm_timeout=self.timeout,
            on_error=on_error,
            sharded=self.topology.cluster,
        )

    # --- aborter: the reply channel --------------------------------------------------
    async def replies_ready(self, wait: float) -> None:
        """Start this process's reply subscription (once) and wait up to ``wait`` for it.
        A missing subscription only costs latency (we poll the record): don't wait long, or a
        hung Redis would cost one timeout here before the request costs another."""
        if self._reply_task is None or self._reply_task.done():
            self._reply_settled = asyncio.Event()
            self._reply_task = asyncio.create_task(self._reply_loop(), name="taskiq-abort-replies")
        settled = self._reply_settled
        assert settled is not None
        if not settled.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(settled.wait(), wait)

    async def _reply_loop(self) -> None:
        settled = self._reply_settled
        assert settled is not None

        async def subscribed() -> None:
            settled.set()

        channel = self.reply_channel
        async for raw in self._subscription(channel, subscribed, "reply", settled.set):
            replies = parse_replies(raw)
            if replies is None:
                self._count_malformed(channel, raw)
                continue
            for reply in replies:
                self._deliver(reply)
            await _yield()

    def forget(self) -> None:
        """The event loop changed: the old one's reply task is gone with it."""
        self._reply_task, self._reply_settled = None, None

    async def close(self) -> None:
        task, self._reply_task = self._reply_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 1.0)
