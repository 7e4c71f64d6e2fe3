"""Bulk aborts on Redis: many requests in one script call and one message per holding worker;
many confirmations in one script call and one reply message per reply channel.

Aborting 10,000 tasks one by one costs 10,000 script calls, 10,000 messages to the worker,
10,000 confirmation calls and 10,000 replies. Here it costs ``n / BATCH`` calls each way and
about one message per worker (or reply channel) per 8 kB. Each script call takes at most
``BATCH`` ids, so that one call never holds Redis for long (a few ms). See docs/protocol.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from taskiq_abort._wire.keys import KeySpace
from taskiq_abort._wire.protocol import BATCH, MAX_MESSAGE_BYTES, reply_payloads
from taskiq_abort.backends.base import Confirmation, RequestResult
from taskiq_abort.backends.redis.clients import LoopClients, request_result

Call = Callable[[str, Awaitable[Any]], Awaitable[Any]]
"""The backend's way to await a Redis call: ``call(what, op)``, its errors named for ``what``."""


def _some(task_ids: Sequence[str]) -> str:
    shown = ", ".join(task_ids[:3])
    return f"{len(task_ids)} tasks ({shown}{', ...' if len(task_ids) > 3 else ''})"


async def request_many(
    clients: LoopClients,
    keys: KeySpace,
    call: Call,
    task_ids: Sequence[str],
    *,
    reason: str | None,
    requested_by: str,
    grace: float,
    request_ttl: float,
    reply_channel: str,
) -> list[RequestResult]:
    """``REQUEST_MANY`` per ``BATCH`` ids; one :class:`RequestResult` per id, in order."""
    head: list[Any] = [
        keys.request_prefix,
        "0" if reason is None else "1",
        reason or "",
        int(request_ttl * 1000),
        requested_by,
        reply_channel,
        keys.worker_channel_prefix,
        round(grace * 1000),
        MAX_MESSAGE_BYTES,
        keys.eta(""),
    ]
    results: list[RequestResult] = []
    for start in range(0, len(task_ids), BATCH):
        chunk = list(task_ids[start : start + BATCH])
        op = clients.request_many([keys.holders, keys.workers], head + chunk)
        rows = await call(f"recording the aborts of {_some(chunk)}", op)
        results += (request_result(tid, row) for tid, row in zip(chunk, rows, strict=True))
    return results


async def confirm_many(
    clients: LoopClients,
    keys: KeySpace,
    call: Call,
    worker_id: str,
    confirmations: Sequence[Confirmation],
) -> None:
    """``CONFIRM_MANY`` per ``BATCH`` confirmations, with one reply message per reply channel
    (more when they do not fit in one)."""
    for start in range(0, len(confirmations), BATCH):
        chunk = confirmations[start : start + BATCH]
        args: list[Any] = [keys.request_prefix, worker_id, len(chunk)]
        by_channel: dict[str, list[tuple[str, str, bool]]] = {}
        for item in chunk:
            args += [item.task_id, item.outcome, "1" if item.forced else "0"]
            for channel in dict.fromkeys(item.reply_to):
                if channel:
                    by_channel.setdefault(channel, []).append(
                        (item.task_id, item.outcome, item.forced)
                    )
        for channel, items in by_channel.items():
            for payload in reply_payloads(worker_id, items):
                args += [channel, payload]
        what = f"confirming the aborts of {_some([c.task_id for c in chunk])}"
        await call(what, clients.confirm_many([keys.holders], args))
