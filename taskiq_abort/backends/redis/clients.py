"""One event loop's Redis clients, and the replies of the scripts turned into our records.

redis-py's connections belong to the event loop that opened them: ``RedisAbortBackend`` keeps
one :class:`LoopClients` per loop (``backend._c``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any

from redis.asyncio.connection import AbstractConnection

from taskiq_abort._wire.protocol import expired_reason
from taskiq_abort.backends.base import AbortNotice, RequestRecord, RequestResult
from taskiq_abort.backends.redis import scripts
from taskiq_abort.backends.redis.connect import Topology
from taskiq_abort.backends.redis.lane import LuaScript, ScriptLane
from taskiq_abort.backends.redis.scripts import CONFIRM_MANY, REQUEST_MANY
from taskiq_abort.outcome import RunningEntry, WorkerInfo

SYNC, REGISTER, REVOKING, REVOKE, SETTLE = (
    LuaScript(src)
    for src in (scripts.SYNC, scripts.REGISTER, scripts.REVOKING, scripts.REVOKE, scripts.SETTLE)
)


class LoopClients:
    """One event loop's command client and the scripts registered on it; the worker's registry
    scripts, the aborter's revoke, and the abort's own round trips (a single ``REQUEST``, a
    worker's ``CONFIRM``) have connections of their own (``lane.py``): those cost a fraction of
    a redis-py call, and they are what an abort waits for."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        topo: Topology,
        slot_key: str,
        timeout: float,
        replicas: int,
    ) -> None:
        self.loop = loop
        self.cmd = cmd = topo.command_client(timeout)

        def lane() -> ScriptLane:
            def connect(fresh: bool) -> Awaitable[AbstractConnection]:
                return topo.lane_connection(cmd, slot_key, fresh)

            return ScriptLane(connect, timeout, replicas, topo.known_replicas(cmd))

        self.lane, self.fence, self.quick = lane(), lane(), lane()
        self._asking = False  # a REQUEST is in flight on ``quick``
        publishing = scripts.sharded if topo.cluster else str
        self.request_lua = LuaScript(publishing(scripts.REQUEST))
        self.confirm_lua = LuaScript(publishing(scripts.CONFIRM))
        self.heartbeat = cmd.register_script(publishing(scripts.HEARTBEAT))
        self.unregister = cmd.register_script(scripts.UNREGISTER)
        self.request = cmd.register_script(publishing(scripts.REQUEST))
        self.confirm = cmd.register_script(publishing(scripts.CONFIRM))
        self.request_many = cmd.register_script(publishing(REQUEST_MANY))
        self.confirm_many = cmd.register_script(publishing(CONFIRM_MANY))
        self.list = cmd.register_script(scripts.LIST)
        self.scripts = (  # to warm
            self.request, self.confirm, self.list, self.unregister, self.request_many,
            self.confirm_many,
        )  # fmt: skip

    async def ask(self, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        """Run ``REQUEST``: on the quick lane, or through the pool while the lane carries
        another (concurrent aborts run side by side, as before)."""
        if self._asking:
            return await self.request(keys, args)
        self._asking = True
        try:
            return await self.quick(self.request_lua, keys, args)
        finally:
            self._asking = False

    async def tell(self, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        """Run ``CONFIRM`` on the quick lane (a worker confirms one call at a time)."""
        return await self.quick(self.confirm_lua, keys, args)


def request_result(task_id: str, row: list[Any]) -> RequestResult:
    """A ``REQUEST`` reply (or one row of ``REQUEST_MANY``'s): ``[holders, outcome, receivers,
    reason]``."""
    holders, outcome, receivers, reason = row
    return RequestResult(
        holders=tuple(holders.split()) if holders else (),
        outcome=outcome or None,
        receivers=int(receivers),
        reason=reason or None,
    )


def record_from_hash(task_id: str, data: dict[str, str]) -> RequestRecord | None:
    if not data:
        return None
    return RequestRecord(
        task_id=task_id,
        reason=data.get("reason"),
        requested_at=int(data.get("at", 0)) / 1000,
        requested_by=data.get("by", ""),
        outcome=data.get("outcome") or None,
        worker=data.get("worker") or None,
        forced=data.get("forced") == "1",
        revoking=data.get("revoking") == "1",
    )


def worker_infos(rows: list[Any]) -> list[WorkerInfo]:
    """``LIST``'s reply: ``[worker_id, [field, value]*, [task_id, entry]*]`` per live worker."""
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


def notices(flat: list[Any]) -> list[AbortNotice]:
    """The requests a script found, as flat ``[task_id, has_reason, reason, reply_to, at,
    grace_ms]*``."""
    return [
        AbortNotice(
            str(flat[i]),
            str(flat[i + 2]) if str(flat[i + 1]) == "1" else None,
            str(flat[i + 3]),
            int(flat[i + 4] or 0),
            int(flat[i + 5] or 0) / 1000,
        )
        for i in range(0, len(flat), 6)
    ]


def expired_notices(flat: list[Any]) -> list[AbortNotice]:
    """The starts a script found past their deadline, as flat ``[task_id, ms_late]*``."""
    return [
        AbortNotice(str(flat[i]), expired_reason(int(flat[i + 1]) / 1000), expired=True)
        for i in range(0, len(flat), 2)
    ]
