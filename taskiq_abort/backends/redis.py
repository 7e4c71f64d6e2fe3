"""The Redis control plane: durable request records, a leased running-task registry, pub/sub.

Two kinds of connection, both our own (never the broker's pool, which a held SUBSCRIBE could
starve): a command client for the atomic scripts, and dedicated pub/sub connections, with
redis-py's silent retries turned off so that every disconnect reaches our loop, which resyncs
from the durable records after it resubscribes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from redis import exceptions as rexc
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff

from taskiq_abort import observe, scripts
from taskiq_abort.backends.base import (
    DEFAULT_LEASE,
    DEFAULT_REQUEST_TTL,
    AbortBackend,
    AbortHandler,
    ReplyWaiter,
    RequestRecord,
    RequestResult,
    ResyncHook,
    RunningEntry,
    WorkerInfo,
)
from taskiq_abort.errors import (
    AbortBackendError,
    AbortBackendUnavailableError,
    AbortPermissionError,
)
from taskiq_abort.keys import DEFAULT_PREFIX, KeySpace
from taskiq_abort.protocol import ReplyMessage, parse_abort, parse_reply

logger = logging.getLogger("taskiq_abort")
_T = TypeVar("_T")

_REDIS_ERRORS = (rexc.RedisError, OSError)
_FIRST_POLL = 1.0
_SUBSCRIBE_WAIT = 0.5


def safe_url(url: str) -> str:
    """``url`` with any password masked, for logs and error messages.

    >>> safe_url("redis://user:s3cret@db:6379/0")
    'redis://user:***@db:6379/0'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class RedisAbortBackend(AbortBackend):
    """Abort requests and the running-task registry in Redis, broadcasts over pub/sub.

    :param url: ``redis://``, ``rediss://`` or ``unix://`` URL (passed to redis-py).
    :param prefix: key prefix; apps sharing one Redis use different prefixes.
    :param channel: control channel name (default ``<prefix>:control``).
    :param request_ttl: seconds an abort request is kept (default one day).
    :param lease: seconds a crashed worker's entries live on (default 10).
    :param timeout: seconds a Redis call may take before it counts as unreachable.
    :param connection_kwargs: passed to ``redis.asyncio.Redis.from_url``.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        channel: str | None = None,
        request_ttl: float = DEFAULT_REQUEST_TTL,
        lease: float = DEFAULT_LEASE,
        timeout: float = 3.0,
        **connection_kwargs: Any,
    ) -> None:
        if request_ttl <= 0 or lease <= 0 or timeout <= 0:
            raise ValueError("request_ttl, lease and timeout must be positive")
        self.url = url
        self.keys = KeySpace(prefix, channel)
        self.request_ttl = request_ttl
        self.lease = lease
        self.timeout = timeout
        self.malformed_messages = 0
        """Control messages received that were not valid; they are dropped."""
        self._kwargs = connection_kwargs
        # A blocking pool: a burst of concurrent aborts (or of a worker's confirmations) waits
        # for a free connection instead of failing with "Too many connections" once redis-py's
        # 100 are in use, which would read as "Redis unreachable".
        self._client: _Client | None = None  # per event loop: see ``_c``
        # Aborter side: one reply subscription per process, shared by every waiting abort().
        self._waiters = {}
        self._reply_task: asyncio.Task[None] | None = None
        # Set once the reply subscription works, or has failed once (then we poll instead).
        self._reply_settled: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"RedisAbortBackend({safe_url(self.url)!r}, prefix={self.keys.prefix!r})"

    @property
    def _c(self) -> _Client:
        """The command client of the running event loop. redis-py's connections belong to the
        loop that opened them; a backend used from a new loop (``asyncio.run`` per test, a
        loop per pytest test) gets fresh ones, and forgets the old loop's waiters."""
        loop = asyncio.get_running_loop()
        client = self._client
        if client is None or client.loop is not loop:
            if client is not None:
                self._loop_changed()
            client = self._client = _Client(loop, self._make_client())
        return client

    def _loop_changed(self) -> None:
        # The old loop's tasks and futures are gone with it; nothing there can be awaited.
        self._reply_task, self._reply_settled = None, None
        self._waiters = {}

    def _make_client(self) -> Redis:
        # A blocking pool: a burst of concurrent aborts (or of a worker's confirmations) waits
        # for a free connection instead of failing with "Too many connections" once redis-py's
        # 100 are in use, which would read as "Redis unreachable".
        pool_kwargs: dict[str, Any] = {"max_connections": 100, "timeout": 10 * self.timeout}
        return Redis.from_pool(
            BlockingConnectionPool.from_url(
                self.url,
                decode_responses=True,
                socket_connect_timeout=self.timeout,
                socket_timeout=self.timeout,
                # Retry a dropped connection, not a timeout: a hung Redis must fail abort()
                # after one ``timeout``, not three.
                retry=Retry(ExponentialBackoff(cap=0.25, base=0.02), 2, (rexc.ConnectionError,)),
                **{**pool_kwargs, **self._kwargs},
            )
        )

    def _pubsub_client(self) -> Redis:
        # No silent retries: a dropped subscription must surface so we resync after it.
        return Redis.from_url(
            self.url,
            socket_connect_timeout=self.timeout,
            socket_timeout=None,
            retry=Retry(NoBackoff(), 0),
            **self._kwargs,
        )

    async def _call(self, what: str, op: Awaitable[_T]) -> _T:
        try:
            return await op
        except (rexc.ConnectionError, rexc.TimeoutError, OSError) as exc:
            where = f"Redis at {safe_url(self.url)}"
            raise AbortBackendUnavailableError(
                f"cannot reach {where} for {what}: {str(exc).rstrip('.')}. "
                "Check the URL and that Redis is running."
            ) from exc
        except rexc.RedisError as exc:
            where = f"Redis at {safe_url(self.url)}"
            text = str(exc).rstrip(".")
            if isinstance(exc, rexc.NoPermissionError) or "NOPERM" in text:
                raise AbortPermissionError(
                    f"{where} refused {what}: {text}. Grant this user the keys "
                    f"'{self.keys.prefix}:*' and the channels '{self.keys.control}*' "
                    "(see docs/acl.md)."
                ) from exc
            raise AbortBackendError(
                f"{where} failed {what}: {type(exc).__name__}: {text}. taskiq-abort needs a "
                "writable Redis >= 6.2 primary (not a replica or a proxy) with Lua scripting."
            ) from exc

    # --- worker side -----------------------------------------------------------------
    async def sync(
        self,
        worker_id: str,
        starts: list[RunningEntry],
        finishes: list[RunningEntry],
    ) -> tuple[bool, list[tuple[str, str | None]]]:
        args: list[Any] = [int(self.lease * 1000), self.keys.request_prefix, len(starts)]
        for entry in starts:
            args += [entry.task_id, entry.encode()]
        args.append(len(finishes))
        for entry in finishes:
            args += [entry.task_id, entry.run_id]
        keys = [self.keys.worker(worker_id), self.keys.tasks(worker_id)]
        alive, aborted = await self._call("registering tasks", self._c.sync(keys, args))
        return bool(alive), _triples(aborted)

    async def register(
        self, worker_id: str, info: dict[str, str], running: list[RunningEntry]
    ) -> list[tuple[str, str | None]]:
        args: list[Any] = [int(self.lease * 1000), worker_id, self.keys.request_prefix, len(info)]
        for field, value in info.items():
            args += [field, value]
        args.append(len(running))
        for entry in running:
            args += [entry.task_id, entry.encode()]
        keys = [self.keys.worker(worker_id), self.keys.tasks(worker_id), self.keys.workers]
        return _triples(await self._call("registering a worker", self._c.register(keys, args)))

    async def heartbeat(self, worker_id: str) -> bool:
        keys = [self.keys.worker(worker_id), self.keys.tasks(worker_id), self.keys.workers]
        args: list[Any] = [int(self.lease * 1000), worker_id]
        return observe.redis_time(await self._call("a heartbeat", self._c.heartbeat(keys, args)))

    async def unregister(self, worker_id: str) -> None:
        async with self._c.cmd.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.worker(worker_id), self.keys.tasks(worker_id))
            pipe.zrem(self.keys.workers, worker_id)
            await self._call("unregistering a worker", pipe.execute())

    async def confirm(self, task_id: str, outcome: str, worker_id: str) -> None:
        payload = ReplyMessage(task_id, outcome, worker_id).encode()
        args = [outcome, worker_id, self.keys.reply, payload]
        await self._call("confirming an abort", self._c.confirm([self.keys.request(task_id)], args))

    async def listen(self, handler: AbortHandler, resync: ResyncHook) -> None:
        async for message in self._subscription(self.keys.control, resync, "control"):
            parsed = parse_abort(message)
            if parsed is None:
                self._count_malformed(message)
                continue
            observe.request_seen(parsed.task_id, parsed.at, parsed.by)
            try:
                handler(parsed.task_id, parsed.reason)
            except Exception:  # a bug in a handler must not end the listener
                logger.exception("taskiq-abort: handling abort of %s failed", parsed.task_id)

    def _count_malformed(self, message: bytes) -> None:
        self.malformed_messages += 1
        observe.malformed_message()
        if self.malformed_messages == 1 or self.malformed_messages % 1000 == 0:
            logger.warning(
                "taskiq-abort: ignored %d malformed control message(s) on %s (latest: %r)",
                self.malformed_messages,
                self.keys.control,
                message[:80],
            )

    async def _subscription(
        self,
        channel: str,
        on_subscribed: Callable[[], Awaitable[None]],
        role: str,
        on_error: Callable[[], None] | None = None,
    ) -> AsyncIterator[bytes]:
        """Yield message payloads forever, reconnecting with backoff; log once per outage."""
        backoff, outage_since = 0.05, 0.0
        client = self._pubsub_client()
        try:
            while True:
                pubsub: PubSub = client.pubsub()
                try:
                    await pubsub.subscribe(channel)
                    # Resync only once SUBSCRIBE is confirmed: nothing published after it is missed.
                    while (await pubsub.get_message(timeout=self.timeout)) is None:
                        pass
                    await on_subscribed()
                    if outage_since:
                        logger.warning(
                            "taskiq-abort: %s channel back after %.1f s; pending aborts applied",
                            role,
                            time.monotonic() - outage_since,
                        )
                    backoff, outage_since = 0.05, 0.0
                    while True:
                        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=60)
                        if msg is not None and msg.get("type") == "message":
                            data = msg["data"]
                            yield data if isinstance(data, bytes) else str(data).encode()
                except _REDIS_ERRORS as exc:
                    if on_error is not None:
                        on_error()
                    if not outage_since:
                        outage_since = time.monotonic()
                        logger.warning(
                            "taskiq-abort: lost the %s channel on %s (%s); reconnecting",
                            role,
                            safe_url(self.url),
                            exc,
                        )
                finally:
                    with contextlib.suppress(BaseException):
                        await asyncio.wait_for(pubsub.aclose(), 1.0)  # type: ignore[no-untyped-call]
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
        finally:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(client.aclose(), 1.0)

    # --- aborter side ----------------------------------------------------------------
    async def request(self, task_id: str, reason: str | None, requested_by: str) -> RequestResult:
        args = [
            task_id,
            "0" if reason is None else "1",
            reason or "",
            int(self.request_ttl * 1000),
            requested_by,
            self.keys.tasks_prefix,
            self.keys.control,
        ]
        holder, entry, outcome, receivers, stored_reason = await self._call(
            f"recording the abort of task {task_id}",
            self._c.request([self.keys.request(task_id), self.keys.workers], args),
        )
        return RequestResult(
            holder=holder or None,
            entry=RunningEntry.decode(task_id, entry, holder) if holder and entry else None,
            outcome=outcome or None,
            receivers=int(receivers),
            reason=stored_reason or None,
        )

    async def prepare_reply(self, task_id: str) -> ReplyWaiter:
        self._c  # noqa: B018  (bind to this event loop before adding a waiter of it)
        waiter = await super().prepare_reply(task_id)
        if self._reply_task is None or self._reply_task.done():
            self._reply_settled = asyncio.Event()
            self._reply_task = asyncio.create_task(self._reply_loop(), name="taskiq-abort-replies")
        settled = self._reply_settled
        assert settled is not None
        if not settled.is_set():
            # A missing subscription only costs latency (we poll the record): don't wait long,
            # or a hung Redis would cost one timeout here before the request costs another.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(settled.wait(), min(self.timeout, _SUBSCRIBE_WAIT))
        return waiter

    async def _reply_loop(self) -> None:
        settled = self._reply_settled
        assert settled is not None

        async def subscribed() -> None:
            settled.set()

        async for raw in self._subscription(self.keys.reply, subscribed, "reply", settled.set):
            reply = parse_reply(raw)
            if reply is not None:
                self._deliver_reply(reply)

    async def wait_reply(
        self, task_id: str, waiter: ReplyWaiter, timeout: float
    ) -> ReplyMessage | None:
        deadline = time.monotonic() + timeout
        poll = _FIRST_POLL
        while True:
            left = deadline - time.monotonic()
            with contextlib.suppress(asyncio.TimeoutError):
                return await asyncio.wait_for(asyncio.shield(waiter), max(0.0, min(poll, left)))
            # The reply may have been lost (reconnect): the durable record is the truth.
            record = await self.get_request(task_id)
            if record is not None and record.outcome in ("aborted", "revoked", "finished"):
                # "revoked" here: a worker refused the attempt it had just shown as running.
                status = "finished" if record.outcome == "finished" else "aborted"
                return ReplyMessage(task_id, status, record.worker or "")
            if deadline - time.monotonic() <= 0:
                return None
            poll = min(poll * 2, 5.0)

    async def set_outcome(self, task_id: str, outcome: str) -> None:
        await self._call(
            "recording an abort outcome",
            self._c.confirm([self.keys.request(task_id)], [outcome, "", self.keys.reply, ""]),
        )

    async def clear_request(self, task_id: str) -> None:
        await self._call(
            "clearing an abort request", self._c.cmd.delete(self.keys.request(task_id))
        )

    async def get_request(self, task_id: str) -> RequestRecord | None:
        data: dict[str, str] = await self._call(
            f"reading the abort request of {task_id}",
            self._c.cmd.hgetall(self.keys.request(task_id)),  # type: ignore[arg-type]
        )
        return _record(task_id, data)

    async def get_requests(self, task_ids: Sequence[str]) -> dict[str, RequestRecord]:
        """One pipelined round trip for many ids (``taskiq-abort ls``)."""
        if not task_ids:
            return {}
        async with self._c.cmd.pipeline(transaction=False) as pipe:
            for tid in task_ids:
                pipe.hgetall(self.keys.request(tid))
            rows: list[dict[str, str]] = await self._call("reading abort requests", pipe.execute())
        records = (_record(tid, data) for tid, data in zip(task_ids, rows, strict=True))
        return {record.task_id: record for record in records if record is not None}

    async def workers(self) -> list[WorkerInfo]:
        rows = await self._call(
            "listing workers",
            self._c.list([self.keys.workers], [self.keys.worker(""), self.keys.tasks_prefix]),
        )
        return [
            WorkerInfo.from_info(
                wid,
                dict(zip(info_flat[::2], info_flat[1::2], strict=True)),
                (
                    RunningEntry.decode(tid, raw, wid)
                    for tid, raw in zip(tasks_flat[::2], tasks_flat[1::2], strict=True)
                ),
            )
            for wid, info_flat, tasks_flat in rows
        ]

    async def close(self) -> None:
        task, self._reply_task = self._reply_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 1.0)
        self._cancel_waiters()
        client, self._client = self._client, None
        if client is not None and client.loop is asyncio.get_running_loop():
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(client.cmd.aclose(), 1.0)


class _Client:
    """One event loop's command connection pool and the scripts registered on it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, cmd: Redis) -> None:
        self.loop, self.cmd = loop, cmd
        self.sync = cmd.register_script(scripts.SYNC)
        self.register = cmd.register_script(scripts.REGISTER)
        self.heartbeat = cmd.register_script(scripts.HEARTBEAT)
        self.request = cmd.register_script(scripts.REQUEST)
        self.confirm = cmd.register_script(scripts.CONFIRM)
        self.list = cmd.register_script(scripts.LIST)


def _record(task_id: str, data: dict[str, str]) -> RequestRecord | None:
    if not data:
        return None
    return RequestRecord(
        task_id=task_id,
        reason=data.get("reason"),
        requested_at=int(data.get("at", 0)) / 1000,
        requested_by=data.get("by", ""),
        outcome=data.get("outcome") or None,
        worker=data.get("worker") or None,
    )


def _triples(flat: list[Any]) -> list[tuple[str, str | None]]:
    return [
        (flat[i], flat[i + 2] if str(flat[i + 1]) == "1" else None) for i in range(0, len(flat), 3)
    ]
