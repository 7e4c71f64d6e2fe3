"""The pub/sub floor's subscriber: ``python3 -m benchmarks.floor URL CHANNEL``.

A bare redis-py asyncio subscriber, in its own process, reading messages the way the abort
listener does (``PubSub.get_message``). Each message carries the sender's ``CLOCK_MONOTONIC``
stamp taken just before ``PUBLISH``; the subscriber stamps the arrival and pushes both back on
``<CHANNEL>:results`` for the benchmark to collect.
"""

from __future__ import annotations

import asyncio
import sys

import redis.asyncio as aredis

from benchmarks.app import now


async def serve(url: str, channel: str) -> None:
    sub = aredis.Redis.from_url(url)
    out = aredis.Redis.from_url(url)
    pending: set[asyncio.Task[int]] = set()
    pubsub = sub.pubsub()
    await pubsub.subscribe(channel)
    while True:
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=60)
        if msg is None or msg.get("type") != "message":
            continue
        arrived = now()
        sent = msg["data"].decode()
        if sent == "stop":
            break
        # Report from a task of its own, like the benchmark task's `finally` does.
        task = asyncio.create_task(out.rpush(f"{channel}:results", f"{sent} {arrived!r}"))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending)
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    await sub.aclose()
    await out.aclose()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2]))
