"""How the aborter settles a task nobody holds, on Redis: claim its revoke (``REVOKING``),
record it revoked (``REVOKE``), or find it finished or refused (``SETTLE``). Each is durable
(``WAIT`` behind it on the fence lane) and, with ``replicas >= 1``, refused while a live worker
has not registered with the current master. See ``scripts.py``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from taskiq_abort._wire.keys import KeySpace
from taskiq_abort.backends.base import RequestRecord
from taskiq_abort.backends.redis.bulk import Call
from taskiq_abort.backends.redis.clients import REVOKE, REVOKING, SETTLE, LoopClients
from taskiq_abort.errors import AbortBackendUnavailableError


class Settling:
    """The settling steps of one backend (:meth:`AbortBackend.set_outcome`,
    :meth:`~AbortBackend.mark_revoking`, :meth:`~AbortBackend.settle_finished`)."""

    def __init__(
        self,
        keys: KeySpace,
        clients: Callable[[], LoopClients],
        call: Call,
        where: str,
        replicas: int,
        request_ttl: float,
    ) -> None:
        self.keys = keys
        self._clients = clients  # the running loop's (see ``RedisAbortBackend._c``)
        self._call = call
        self.where = where
        self.replicas = replicas
        self.request_ttl = request_ttl

    async def set_outcome(self, task_id: str, outcome: str) -> None:
        key = self.keys.request(task_id)
        if outcome != "revoked":
            op: Awaitable[Any] = self._clients().confirm([key], [outcome, "", "", "0"])
            await self._call("recording an abort outcome", op)
            return
        # Reported to the caller as "revoked" next: it must outlive a failover (docs/deploy.md).
        keys, check = self._registered_check([key, self.keys.eta(task_id)])
        args = [outcome, int(self.request_ttl * 1000), *check]
        op = self._clients().fence(REVOKE, keys, args, durable=True)
        recorded = await self._call(f"recording that task {task_id} is revoked", op)
        self._refuse_unregistered(task_id, recorded)
        if recorded is None and self.replicas > 0:
            raise AbortBackendUnavailableError(
                f"the abort request of task {task_id} is gone from {self.where} (lost in a "
                "failover?): nothing was revoked; abort it again"
            )
        if recorded not in (None, "revoked", "aborted"):
            # Settled "finished" by another aborter that found our result without our claim
            # (lost in a failover): that request refuses no start, so this is no revoke.
            raise AbortBackendUnavailableError(
                f"the abort request of task {task_id} was settled {recorded!r} on {self.where} "
                "by another aborter (a failover lost this one's claim?): it is not revoked; "
                "abort it again"
            )

    async def mark_revoking(self, task_id: str) -> None:
        # Durable, and only once every live worker registered with this master: the task's
        # TaskAbortedError result is stored next, and must not stand for a revoke that REVOKE
        # would refuse or a failover would lose.
        keys, args = self._registered_check([self.keys.request(task_id)])
        op = self._clients().fence(REVOKING, keys, args, durable=True)
        claimed = await self._call(f"claiming the revoke of task {task_id}", op)
        self._refuse_unregistered(task_id, claimed)
        if not claimed:
            raise AbortBackendUnavailableError(
                f"the abort request of task {task_id} is gone from {self.where} (expired, or "
                "lost in a failover?): nothing was revoked; abort it again"
            )

    def _registered_check(self, keys: list[str]) -> tuple[list[str], list[str | int]]:
        """``keys``, and the trailing args, with what REVOKE and REVOKING need to check that
        every live worker registered with this master (with ``replicas >= 1``)."""
        if self.replicas > 0:
            return [*keys, self.keys.workers], [self.keys.worker_prefix]
        return keys, []

    def _refuse_unregistered(self, task_id: str, answer: Any) -> None:
        if isinstance(answer, list):
            raise AbortBackendUnavailableError(
                f"worker {answer[0]} has not registered with the master of {self.where} since "
                f"it changed (a failover): it may be running task {task_id} unregistered, so it "
                "is not revoked yet; abort it again in a few seconds"
            )

    async def settle_finished(self, task_id: str) -> RequestRecord | None:
        # One script decides, on the current master (fenced when replicas >= 1: a stale master
        # must not answer "finished"), against the REVOKING claims of concurrent aborters.
        ttl = int(self.request_ttl * 1000)
        keys = [self.keys.request(task_id), self.keys.eta(task_id)]
        op = self._clients().fence(SETTLE, keys, [ttl], durable=True)
        settled = await self._call(f"settling the abort of task {task_id}", op)
        if not settled:
            if self.replicas == 0:  # dropped by an aborter that found it finished, or expired
                return None
            raise AbortBackendUnavailableError(
                f"the abort request of task {task_id} is gone from {self.where} (lost in a "
                "failover?): abort it again"
            )
        outcome, worker = settled
        if not outcome:
            return None
        return RequestRecord(task_id, None, 0.0, "", str(outcome), str(worker) or None)
