"""A worker's registration in Redis: its starts and finishes in one call (``SYNC``, the atomic
start check), its whole registration (``REGISTER``), its lease (``HEARTBEAT``) and its clean exit
(``UNREGISTER``). A part of :class:`~taskiq_abort.backends.redis.RedisAbortBackend`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from taskiq_abort._wire.keys import KeySpace
from taskiq_abort.backends.base import AbortNotice, NotDurableError
from taskiq_abort.backends.redis.bulk import Call
from taskiq_abort.backends.redis.clients import (
    REGISTER,
    SYNC,
    LoopClients,
    expired_notices,
    notices,
)
from taskiq_abort.observability import events
from taskiq_abort.outcome import RunningEntry


class Registry:
    """The worker-side registry calls of one backend."""

    def __init__(
        self,
        keys: KeySpace,
        clients: Callable[[], LoopClients],
        call: Call,
        lease: float,
        replicas: int,
    ) -> None:
        self.keys = keys
        self._clients = clients  # the running loop's (see ``RedisAbortBackend._c``)
        self._call = call
        self.lease = lease
        self.replicas = replicas

    def _worker_keys(self, worker_id: str) -> list[str]:
        keys = self.keys
        return [keys.worker(worker_id), keys.tasks(worker_id), keys.workers, keys.holders]

    async def sync(
        self,
        worker_id: str,
        starts: list[RunningEntry],
        finishes: list[RunningEntry],
    ) -> tuple[bool, list[AbortNotice]]:
        keys = self.keys
        args: list[Any] = [
            int(self.lease * 1000), keys.request_prefix, worker_id, keys.rule_prefix, len(starts)
        ]  # fmt: skip
        for entry in starts:
            deadline = entry.expires_at
            args += [
                entry.task_id,
                entry.encode(),
                "" if deadline is None else int(deadline * 1000),
                len(entry.labels),
                *entry.pairs,  # matched against the abort rules (abort_where)
            ]
        args.append(len(finishes))
        for entry in finishes:
            args += [entry.task_id, entry.token]
        script_keys = [keys.worker(worker_id), keys.tasks(worker_id), keys.holders, keys.rules]
        op = self._clients().lane(SYNC, script_keys, args, durable=bool(starts))
        try:
            alive, aborted, expired = await self._call("registering tasks", op)
        except NotDurableError as exc:
            # Refused on the master: they must not run.
            exc.notices = notices(exc.reply[1]) + expired_notices(exc.reply[2])
            raise
        return bool(alive), notices(aborted) + expired_notices(expired)

    async def register(
        self, worker_id: str, info: dict[str, str], running: list[RunningEntry]
    ) -> list[AbortNotice]:
        args: list[Any] = [int(self.lease * 1000), worker_id, self.keys.request_prefix, len(info)]
        for field, value in info.items():
            args += [field, value]
        args.append(len(running))
        for entry in running:
            args += [entry.task_id, entry.encode()]
        args.append("1" if self.replicas > 0 else "0")  # note the master's history (REVOKE)
        args.append(self.keys.rule_prefix)
        keys = [*self._worker_keys(worker_id), self.keys.rules]
        op = self._clients().lane(REGISTER, keys, args, durable=True)
        try:
            return notices(await self._call("registering a worker", op))
        except NotDurableError as exc:
            exc.notices = notices(exc.reply)  # requests found on the master: apply them
            raise

    async def heartbeat(self, worker_id: str) -> bool:
        keys = self.keys
        args: list[Any] = [
            int(self.lease * 1000), worker_id, keys.worker_prefix, keys.tasks_prefix,
            keys.worker_channel_prefix, "1" if self.replicas > 0 else "0",
        ]  # fmt: skip
        op = self._clients().heartbeat(self._worker_keys(worker_id), args)
        return events.redis_time(await self._call("a heartbeat", op))

    async def unregister(self, worker_id: str) -> None:
        op = self._clients().unregister(self._worker_keys(worker_id), [worker_id])
        await self._call("unregistering a worker", op)
