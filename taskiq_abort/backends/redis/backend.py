"""The Redis control plane: durable request records, a leased running-task registry with a
holder index, and pub/sub channels of one worker or one aborter each.

An abort goes to the workers holding the task only (its cost does not grow with the fleet), and
each confirmation to the aborters that asked. Connections: ``connect.py``; the atomic scripts:
``scripts.py`` (their text: ``lua/``; the bulk calls: ``bulk.py``; settling a task nobody
holds: ``settle.py``); the channels: ``channels.py``; the (re)subscribe loop:
``subscription.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any, TypeVar

from redis.asyncio.connection import parse_url

from taskiq_abort._scrub import safe_url
from taskiq_abort._wire.keys import DEFAULT_PREFIX, KeySpace
from taskiq_abort._wire.protocol import BATCH, ReplyMessage
from taskiq_abort.backends.base import (
    DEFAULT_LEASE,
    DEFAULT_REQUEST_TTL,
    AbortBackend,
    AbortHandler,
    AbortNotice,
    Confirmation,
    ReplyWaiter,
    RequestRecord,
    RequestResult,
    ResyncHook,
)
from taskiq_abort.backends.redis import bulk
from taskiq_abort.backends.redis.channels import SUBSCRIBE_WAIT, Channels, from_record
from taskiq_abort.backends.redis.clients import (
    LoopClients,
    record_from_hash,
    request_result,
    worker_infos,
)
from taskiq_abort.backends.redis.connect import (
    Topology,
    call,
    check_options,
    keyword_options,
)
from taskiq_abort.backends.redis.registry import Registry
from taskiq_abort.backends.redis.rules import RedisRules
from taskiq_abort.backends.redis.settle import Settling
from taskiq_abort.outcome import AbortRule, RunningEntry, WorkerInfo

logger = logging.getLogger("taskiq_abort")
_T = TypeVar("_T")


class RedisAbortBackend(AbortBackend):
    """Abort requests and the running-task registry in Redis, delivery over pub/sub.

    :param url: ``redis://``, ``rediss://`` or ``unix://`` URL (passed to redis-py); with
        ``cluster``, any node of the Cluster.
    :param prefix: key prefix; apps sharing one Redis use different prefixes. Keys and channels
        are named ``{prefix}:...`` (one Redis Cluster hash slot per prefix).
    :param channel: namespace of the control channels (default ``ctl``).
    :param request_ttl: seconds an abort request is kept (default one day).
    :param lease: seconds a crashed worker's entries live on (default 10).
    :param timeout: seconds a Redis call may take before it counts as unreachable.
    :param cluster: ``url`` is a Redis Cluster: redis-py's ``RedisCluster``, sharded pub/sub.
    :param sentinels: ``(host, port)`` of Redis Sentinels, instead of ``url``; with
        ``master_name`` and ``sentinel_kwargs`` (options of the sentinel connections), as
        taskiq-redis's sentinel brokers take them.
    :param replicas: the most replicas that must hold a task start or a revoke before it
        counts (``WAIT``), so that a failover cannot lose it; fewer when the master has fewer
        (connected, or still counted by the sentinels or the Cluster); default 1 with
        ``cluster`` or ``sentinels``, else 0. See docs/deploy.md.
    :param connection_kwargs: passed to redis-py (``ssl_ca_certs``, ``username``...);
        unknown names raise :class:`~taskiq_abort.AbortConfigError`.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        channel: str | None = None,
        request_ttl: float = DEFAULT_REQUEST_TTL,
        lease: float = DEFAULT_LEASE,
        timeout: float = 3.0,
        cluster: bool = False,
        sentinels: Sequence[tuple[str, int]] | None = None,
        master_name: str | None = None,
        sentinel_kwargs: dict[str, Any] | None = None,
        replicas: int | None = None,
        **connection_kwargs: Any,
    ) -> None:
        if request_ttl <= 0 or lease <= 0 or timeout <= 0:
            raise ValueError("request_ttl, lease and timeout must be positive")
        if sentinels:
            if url is not None or cluster:
                raise ValueError("give sentinels= (with master_name=) or a url, not both")
            if not master_name:
                raise ValueError("sentinels= needs master_name= (the name the sentinels monitor)")
        elif url is None:
            raise ValueError("a Redis URL or sentinels= is needed")
        else:
            parse_url(url)  # a wrong URL fails here, not at the first connection (ValueError)
        if replicas is not None and replicas < 0:
            raise ValueError(f"replicas must be >= 0, not {replicas}")
        check_options(connection_kwargs, cluster, known=keyword_options(RedisAbortBackend))
        self.url = url
        self.topology = Topology(
            url, cluster, tuple(sentinels or ()), master_name, sentinel_kwargs, connection_kwargs
        )
        self.replicas = (1 if cluster or sentinels else 0) if replicas is None else replicas
        self.keys = KeySpace(prefix, channel)
        self.request_ttl = request_ttl
        self.lease = lease
        self.timeout = timeout
        # This process's reply channel, as an aborter: the workers confirm there.
        self.aborter_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.reply_channel = self.keys.reply_channel(self.aborter_id)
        self._client: LoopClients | None = None  # per event loop: see ``_c``
        self._waiters = {}

        def clients() -> LoopClients:  # the running loop's, when they need them
            return self._c

        self._channels = Channels(
            self.keys, self.topology, timeout, self.reply_channel, clients, self._deliver_reply
        )
        self._settling = Settling(
            self.keys, clients, self._call, self.where, self.replicas, request_ttl
        )
        self._registry = Registry(self.keys, clients, self._call, lease, self.replicas)
        self._rules = RedisRules(self.keys, clients, self._call)

    @property
    def malformed_messages(self) -> int:
        """Control messages received that were not valid; they are dropped."""
        return self._channels.malformed_messages

    def __repr__(self) -> str:
        topo, prefix = self.topology, f"prefix={self.keys.prefix!r}"
        if topo.sentinels:
            return (
                f"RedisAbortBackend(sentinels={list(topo.sentinels)!r}, "
                f"master_name={topo.master_name!r}, {prefix})"
            )
        cluster = ", cluster=True" if topo.cluster else ""
        return f"RedisAbortBackend({safe_url(self.url or '')!r}{cluster}, {prefix})"

    @property
    def prefix(self) -> str:
        return self.keys.prefix

    @property
    def where(self) -> str:
        """Where the control plane is, safe to print."""
        return self.topology.where

    @property
    def _c(self) -> LoopClients:
        """The command client of the running event loop. redis-py's connections belong to the
        loop that opened them; a backend used from a new loop (``asyncio.run`` per test, a
        loop per pytest test) gets fresh ones, and forgets the old loop's waiters."""
        loop = asyncio.get_running_loop()
        client = self._client
        if client is None or client.loop is not loop:
            if client is not None:
                # The old loop's tasks and queues are gone with it; nothing there can be awaited.
                self._channels.forget()
                self._waiters = {}
            client = self._client = LoopClients(
                loop, self.topology, self.keys.holders, self.timeout, self.replicas
            )
        return client

    async def check(self) -> None:
        """Connect and make sure the server is the kind configured (a Cluster with
        ``cluster=True``, a plain Redis without, a master the sentinels know):
        :class:`~taskiq_abort.AbortConfigError` naming the fix, within ``timeout``."""
        op = asyncio.wait_for(self.topology.check(self._c.cmd), self.timeout)
        await self._call("checking the server", op)

    async def _call(self, what: str, op: Awaitable[_T]) -> _T:
        return await call(self.where, self.keys, what, op)

    # --- worker side -----------------------------------------------------------------
    async def listen(self, worker_id: str, handler: AbortHandler, resync: ResyncHook) -> None:
        await self._channels.listen(worker_id, handler, resync)

    async def sync(
        self, worker_id: str, starts: list[RunningEntry], finishes: list[RunningEntry]
    ) -> tuple[bool, list[AbortNotice]]:
        return await self._registry.sync(worker_id, starts, finishes)

    async def register(
        self, worker_id: str, info: dict[str, str], running: list[RunningEntry]
    ) -> list[AbortNotice]:
        return await self._registry.register(worker_id, info, running)

    async def heartbeat(self, worker_id: str) -> bool:
        return await self._registry.heartbeat(worker_id)

    async def unregister(self, worker_id: str) -> None:
        await self._registry.unregister(worker_id)

    async def confirm(
        self,
        task_id: str,
        outcome: str,
        worker_id: str,
        reply_to: Iterable[str] = (),
        forced: bool = False,
    ) -> None:
        payload = ReplyMessage(task_id, outcome, worker_id, forced).encode()
        args = [outcome, worker_id, payload, "1" if forced else "0"]
        args += [ch for ch in reply_to if ch]
        op = self._c.tell([self.keys.request(task_id)], args)
        await self._call("confirming an abort", op)

    async def confirm_many(self, worker_id: str, confirmations: Sequence[Confirmation]) -> None:
        if len(confirmations) == 1:  # a lone one: CONFIRM and a `reply`, as ever
            (item,) = confirmations
            await self.confirm(item.task_id, item.outcome, worker_id, item.reply_to, item.forced)
            return
        await bulk.confirm_many(self._c, self.keys, self._call, worker_id, confirmations)

    # --- aborter side ----------------------------------------------------------------
    async def request(
        self, task_id: str, reason: str | None, requested_by: str, grace: float = 0.0
    ) -> RequestResult:
        keys = self.keys
        args = [
            task_id,
            "0" if reason is None else "1",
            reason or "",
            int(self.request_ttl * 1000),
            requested_by,
            self.reply_channel,
            keys.worker_channel_prefix,
            round(grace * 1000),
        ]
        row = await self._call(
            f"recording the abort of task {task_id}",
            self._c.ask(
                [keys.request(task_id), keys.holders, keys.workers, keys.eta(task_id)], args
            ),
        )
        return request_result(task_id, row)

    async def request_many(
        self,
        task_ids: Sequence[str],
        reason: str | None,
        requested_by: str,
        grace: float = 0.0,
    ) -> list[RequestResult]:
        """One script call per 1,000 ids, one message per holding worker (``bulk.py``)."""
        return await bulk.request_many(
            self._c,
            self.keys,
            self._call,
            task_ids,
            reason=reason,
            requested_by=requested_by,
            grace=grace,
            request_ttl=self.request_ttl,
            reply_channel=self.reply_channel,
        )

    async def note_eta(self, task_id: str, delay: float) -> None:
        eta_ms = int((time.time() + delay) * 1000)  # for people reading it; Redis uses the PTTL
        life = int((delay + self.request_ttl) * 1000)
        op = self._c.cmd.set(self.keys.eta(task_id), eta_ms, px=life)
        await self._call(f"noting when delayed task {task_id} is due", op)

    async def warm(self, replies: bool = True) -> None:
        """Connect and load the scripts now (and subscribe to the reply channel, for an
        aborter), so that the first abort costs what the others do. Best effort: a Redis that
        is down must not stop the application from starting (``abort()`` then says why)."""
        try:
            client = self._c
            loads = (client.cmd.script_load(script.script) for script in client.scripts)
            await asyncio.wait_for(asyncio.gather(*loads), self.timeout)
            # Connect the quick lane and load CONFIRM there: a no-op ("unknown" is never
            # recorded, and there is nobody to tell).
            noop = client.tell([self.keys.request("-")], ["unknown", "", "", "0"])
            await asyncio.wait_for(noop, self.timeout)
            if replies:
                await self._channels.replies_ready(self.timeout)
        except Exception as exc:  # never fail the caller's start-up
            logger.info("taskiq-abort: could not prepare aborts yet (%s); will on first use", exc)

    async def prepare_replies(self, task_ids: Iterable[str]) -> ReplyWaiter:
        self._c  # noqa: B018  (bind to this event loop before adding a waiter of it)
        waiter = await super().prepare_replies(task_ids)
        await self._channels.replies_ready(min(self.timeout, SUBSCRIBE_WAIT))
        return waiter

    async def recheck(self, task_ids: Sequence[str]) -> list[ReplyMessage]:
        replies = []
        for start in range(0, len(task_ids), BATCH):  # one pipelined round trip each
            chunk = task_ids[start : start + BATCH]
            records = await self.get_requests(chunk)
            replies += [r for tid in chunk if (r := from_record(tid, records.get(tid)))]
        return replies

    async def set_outcome(self, task_id: str, outcome: str) -> None:
        await self._settling.set_outcome(task_id, outcome)

    async def mark_revoking(self, task_id: str) -> None:
        await self._settling.mark_revoking(task_id)

    async def settle_finished(self, task_id: str) -> RequestRecord | None:
        return await self._settling.settle_finished(task_id)

    async def add_rules(self, rules: Sequence[AbortRule], ttl: float) -> list[AbortRule]:
        return await self._rules.add_rules(rules, ttl)

    async def cancel_rule(self, rule_id: str) -> bool:
        return await self._rules.cancel_rule(rule_id)

    async def rules(self) -> list[AbortRule]:
        return await self._rules.rules()

    async def clear_request(self, task_id: str) -> None:
        await self._call(
            "clearing an abort request", self._c.cmd.delete(self.keys.request(task_id))
        )

    async def get_request(self, task_id: str) -> RequestRecord | None:
        data: dict[str, str] = await self._call(
            f"reading the abort request of {task_id}",
            self._c.cmd.hgetall(self.keys.request(task_id)),  # type: ignore[arg-type]
        )
        return record_from_hash(task_id, data)

    async def get_requests(self, task_ids: Sequence[str]) -> dict[str, RequestRecord]:
        """One pipelined round trip for many ids (``taskiq-abort ls``)."""
        if not task_ids:
            return {}
        async with self._c.cmd.pipeline(transaction=False) as pipe:
            for tid in task_ids:
                pipe.hgetall(self.keys.request(tid))
            rows: list[dict[str, str]] = await self._call("reading abort requests", pipe.execute())
        records = (record_from_hash(tid, data) for tid, data in zip(task_ids, rows, strict=True))
        return {record.task_id: record for record in records if record is not None}

    async def workers(self) -> list[WorkerInfo]:
        rows = await self._call(
            "listing workers",
            self._c.list([self.keys.workers], [self.keys.worker_prefix, self.keys.tasks_prefix]),
        )
        return worker_infos(rows)

    async def close(self) -> None:
        await self._channels.close()
        self._cancel_waiters()
        client, self._client = self._client, None
        if client is not None and client.loop is asyncio.get_running_loop():
            await client.lane.close()
            await client.fence.close()
            await client.quick.close()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(client.cmd.aclose(), 1.0)
