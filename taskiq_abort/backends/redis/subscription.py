"""One pub/sub channel, held forever: reconnect with backoff, resync after every (re)subscribe.

Anything published while a subscriber is away is lost, and Redis says so only to the publisher
(0 receivers). So the durable records are the truth and pub/sub only the fast path: after every
subscribe is confirmed, ``on_subscribed`` runs (the worker re-registers and applies the requests
made while it was away; an aborter knows it may now wait for replies).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from redis import exceptions as rexc
from redis.asyncio.client import PubSub

from taskiq_abort.observability.outages import OUTAGES, Link

logger = logging.getLogger("taskiq_abort")

REDIS_ERRORS = (rexc.RedisError, OSError)
_IDLE_READ = 60.0  # seconds one read may wait for a message; a dead socket errors sooner


async def subscription(
    open_pubsub: Callable[[bool], Awaitable[PubSub]],
    channel: str,
    on_subscribed: Callable[[], Awaitable[None]],
    *,
    role: str,
    where: str,
    confirm_timeout: float,
    on_error: Callable[[], None] | None = None,
    sharded: bool = False,
) -> AsyncIterator[bytes]:
    """Yield the payloads published on ``channel`` until cancelled.

    :param open_pubsub: a pub/sub connection to the server that delivers ``channel`` (``True``
        after a fault: look it up again), without silent retries: every disconnect reaches us.
    :param role: what the channel is for, in log lines ("control", "reply").
    :param where: the server, for log lines (password masked).
    :param on_error: called on every fault (an aborter stops waiting for the subscription).
    :param sharded: SSUBSCRIBE (a Cluster's sharded pub/sub) instead of SUBSCRIBE.
    """
    backoff, outage, subscribed_once = 0.05, False, False
    link = Link()  # this subscription, in the process's outage log
    kinds = ("smessage",) if sharded else ("message",)
    while True:
        pubsub: PubSub | None = None
        try:
            pubsub = await asyncio.wait_for(open_pubsub(outage), confirm_timeout)
            await (pubsub.ssubscribe if sharded else pubsub.subscribe)(channel)
            # Resync only once SUBSCRIBE is confirmed: nothing published after it is missed.
            while (await pubsub.get_message(timeout=confirm_timeout)) is None:
                pass
            await on_subscribed()
            OUTAGES.back(link, logger, f"{role} channel back, pending aborts applied")
            backoff, outage, subscribed_once = 0.05, False, True
            while True:
                msg = await pubsub.get_message(timeout=_IDLE_READ)
                if msg is None:
                    continue
                kind = msg.get("type")
                if kind in kinds:
                    data = msg["data"]
                    yield data if isinstance(data, bytes) else str(data).encode()
                elif kind in ("sunsubscribe", "unsubscribe"):  # e.g. the slot moved
                    raise rexc.ConnectionError(f"{channel} moved to another master")
        except REDIS_ERRORS as exc:
            if on_error is not None:
                on_error()
            outage = True
            OUTAGES.lost(
                link,
                logger,
                "taskiq-abort: %s the %s channel on %s (%s); %s",
                "lost" if subscribed_once else "could not open",
                role,
                where,
                exc,
                "reconnecting" if subscribed_once else "retrying",
                warn=isinstance(exc, rexc.NoPermissionError),  # rights to grant, not an outage
            )
        finally:
            if pubsub is not None:
                await _close(pubsub)
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 2.0)


async def _close(pubsub: PubSub) -> None:
    """Close the subscription and the pool it came from (one per subscription)."""
    with contextlib.suppress(BaseException):
        await asyncio.wait_for(pubsub.aclose(), 1.0)  # type: ignore[no-untyped-call,unused-ignore]
    with contextlib.suppress(BaseException):
        await asyncio.wait_for(pubsub.connection_pool.disconnect(), 1.0)
