"""The control-plane contract that the Redis and in-process backends both fulfil."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from taskiq_abort._wire.keys import DEFAULT_PREFIX
from taskiq_abort._wire.protocol import ReplyMessage
from taskiq_abort.errors import AbortBackendUnavailableError, AbortConfigError
from taskiq_abort.outcome import AbortRule, RunningEntry, WorkerInfo

DEFAULT_REQUEST_TTL = 86_400.0
"""Seconds an abort request is kept: a queued task revoked now may be picked up hours later."""
DEFAULT_LEASE = 10.0
"""Seconds a worker's registration (and its running-task entries) outlives its last heartbeat."""


@dataclass(frozen=True)
class RequestResult:
    """What recording an abort request found."""

    holders: tuple[str, ...]
    """The live workers holding the task, each told on its own channel (usually one; several
    for a broker that delivers a task to every worker)."""
    outcome: str | None
    """An outcome already recorded for this id by an earlier abort ("aborted", "revoked"...)."""
    receivers: int
    reason: str | None = None
    """The stored reason: the first request's, when the task was aborted before."""

    @property
    def holder(self) -> str | None:
        return self.holders[0] if self.holders else None


@dataclass(frozen=True)
class RequestRecord:
    """A stored abort request, as ``status`` shows it."""

    task_id: str
    reason: str | None
    requested_at: float
    requested_by: str
    outcome: str | None
    worker: str | None
    forced: bool = False
    """The outcome is ``aborted`` and came after a grace period ran out."""
    revoking: bool = False
    """An aborter claimed its revoke (:meth:`AbortBackend.mark_revoking`)."""


ReplyWaiter = asyncio.Queue[ReplyMessage]


@dataclass(frozen=True)
class AbortNotice:
    """An abort request as a worker receives it."""

    task_id: str
    reason: str | None
    reply_to: str = ""
    """Where the aborter waits for the confirmation ('' : nobody waits)."""
    at: int = 0
    """When the request was recorded, ms since the epoch on the control plane's clock."""
    grace: float = 0.0
    """Seconds the task may take to stop on its own before it is cancelled."""
    expired: bool = False
    """Not a request: the start was refused because it came after the task's deadline."""


@dataclass(frozen=True)
class Confirmation:
    """How an abort ended on a worker, for the aborters waiting on ``reply_to``."""

    task_id: str
    outcome: str
    """``aborted``, ``finished`` or ``unknown`` (replied, never recorded)."""
    reply_to: tuple[str, ...] = ()
    forced: bool = False
    """It was cancelled when its grace period ran out."""


class NotDurableError(AbortBackendUnavailableError):
    """A registry write ran on the master but its replicas did not acknowledge it in time: it
    may not survive a failover, so it is rewritten later. What the write answered holds all the
    same: ``notices`` are the starts it refused (they must not run) or the requests it found."""

    def __init__(self, message: str, reply: Any = None) -> None:
        super().__init__(message)
        self.reply = reply
        self.notices: list[AbortNotice] = []


AbortHandler = Callable[[AbortNotice], None]
"""Called on the worker for each abort request of a task it holds."""
ResyncHook = Callable[[], Awaitable[None]]


class AbortBackend(abc.ABC):
    """Stores abort requests and the running-task registry, and carries the broadcasts."""

    request_ttl: float
    lease: float
    url: str | None = None
    """The control plane's URL, as configured (with its password); ``None`` for one with no
    URL (in-process, or found through Sentinels)."""

    @property
    def prefix(self) -> str:
        """The key prefix, for people reading where a CLI or a dashboard looks."""
        return DEFAULT_PREFIX

    async def check(self) -> None:  # noqa: B027 (nothing to check by default)
        """Make sure the server is the kind configured, at start-up: raise
        :class:`~taskiq_abort.AbortConfigError` naming the fix. By default nothing to check."""

    # --- worker side -----------------------------------------------------------------
    @abc.abstractmethod
    async def sync(
        self,
        worker_id: str,
        starts: list[RunningEntry],
        finishes: list[RunningEntry],
    ) -> tuple[bool, list[AbortNotice]]:
        """Register starts and drop finishes in one round trip.

        Returns ``(worker_registered, notices)``: the starts that already have an abort
        request; those are not registered and must not run.
        """

    @abc.abstractmethod
    async def register(
        self, worker_id: str, info: dict[str, str], running: list[RunningEntry]
    ) -> list[AbortNotice]:
        """(Re)write the worker and all it runs; return the held ids with a pending request."""

    @abc.abstractmethod
    async def heartbeat(self, worker_id: str) -> bool:
        """Extend the lease; ``False`` when the registration is gone and must be rewritten."""

    @abc.abstractmethod
    async def unregister(self, worker_id: str) -> None:
        """Remove the worker and its entries (clean shutdown)."""

    @abc.abstractmethod
    async def confirm(
        self,
        task_id: str,
        outcome: str,
        worker_id: str,
        reply_to: Iterable[str],
        forced: bool = False,
    ) -> None:
        """Record how an abort ended and send the reply to the aborters waiting for it;
        ``forced``: it was cancelled when its grace period ran out."""

    async def confirm_many(self, worker_id: str, confirmations: Sequence[Confirmation]) -> None:
        """:meth:`confirm` for several tasks at once (the worker batches the confirmations
        that come while one call is in flight); by default one :meth:`confirm` each."""
        for item in confirmations:
            await self.confirm(item.task_id, item.outcome, worker_id, item.reply_to, item.forced)

    @abc.abstractmethod
    async def listen(self, worker_id: str, handler: AbortHandler, resync: ResyncHook) -> None:
        """Deliver the abort requests sent to ``worker_id`` to ``handler`` until cancelled;
        reconnect on faults and call ``resync`` after every (re)subscribe, so requests made
        while away are applied."""

    # --- aborter side ----------------------------------------------------------------
    @abc.abstractmethod
    async def request(
        self, task_id: str, reason: str | None, requested_by: str, grace: float = 0.0
    ) -> RequestResult:
        """Record the request durably, then tell the workers holding the task (to cancel it
        at once, or after ``grace`` seconds if it has not stopped on its own by then)."""

    async def request_many(
        self,
        task_ids: Sequence[str],
        reason: str | None,
        requested_by: str,
        grace: float = 0.0,
    ) -> list[RequestResult]:
        """:meth:`request` for several tasks at once, one result per id in order. Backends
        that can do better (one round trip, one message per holding worker) override it; by
        default each id is requested on its own."""
        return [await self.request(tid, reason, requested_by, grace) for tid in task_ids]

    @abc.abstractmethod
    async def note_eta(self, task_id: str, delay: float) -> None:
        """``task_id`` was kicked to start ``delay`` seconds from now, later than
        ``request_ttl``: a request for it must be kept until then + ``request_ttl``, so that
        the worker that gets it at its time still refuses it. Called only for such kicks."""

    # Each abort() call waits on a queue of its own (a task held by several workers sends
    # several replies), so concurrent aborts of one id (a bulk abort with duplicates, two
    # operators) never take each other's replies.
    _waiters: dict[str, set[ReplyWaiter]]

    async def prepare_reply(self, task_id: str) -> ReplyWaiter:
        """Be ready to receive ``task_id``'s replies before the request is sent."""
        return await self.prepare_replies((task_id,))

    async def prepare_replies(self, task_ids: Iterable[str]) -> ReplyWaiter:
        """One queue receiving the replies about every id of ``task_ids`` (a bulk abort)."""
        waiter: ReplyWaiter = asyncio.Queue()
        for task_id in task_ids:
            self._waiters.setdefault(task_id, set()).add(waiter)
        return waiter

    def discard_reply(self, task_id: str, waiter: ReplyWaiter) -> None:
        """Stop waiting (always called, after ``prepare_reply``)."""
        self.discard_replies((task_id,), waiter)

    def discard_replies(self, task_ids: Iterable[str], waiter: ReplyWaiter) -> None:
        """Stop waiting (always called, after ``prepare_replies``)."""
        for task_id in task_ids:
            waiters = self._waiters.get(task_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[task_id]

    async def recheck(self, task_ids: Sequence[str]) -> list[ReplyMessage]:
        """Replies read from the durable records of ``task_ids``, for aborters whose reply
        may have been lost (a reconnect): one per id whose record settles it (an outcome, or
        the record gone). By default none: replies of an in-process backend are never lost."""
        return []

    def _deliver_reply(self, reply: ReplyMessage) -> None:
        for waiter in self._waiters.get(reply.task_id, ()):
            waiter.put_nowait(reply)

    def _cancel_waiters(self) -> None:
        self._waiters.clear()

    async def warm(self, replies: bool = True) -> None:  # noqa: B027 (nothing by default)
        """Prepare connections and scripts before the first abort (and, with ``replies``, the
        subscription an aborter waits on); never raises."""

    @abc.abstractmethod
    async def set_outcome(self, task_id: str, outcome: str) -> None:
        """Record an outcome decided by the aborter (``revoked``)."""

    @abc.abstractmethod
    async def clear_request(self, task_id: str) -> None:
        """Drop a request that turned out to be moot (the task had finished)."""

    @abc.abstractmethod
    async def get_request(self, task_id: str) -> RequestRecord | None:
        """The stored request for ``task_id``, if any."""

    @abc.abstractmethod
    async def mark_revoking(self, task_id: str) -> None:
        """Nobody holds ``task_id`` and it has no result: claim its revoke in its request, before
        its ``TaskAbortedError`` result is stored, so that an aborter that finds that result
        takes it for ours, not the task's own (:meth:`settle_finished`). Raises
        :class:`~taskiq_abort.AbortBackendUnavailableError` when the request is gone."""

    async def settle_finished(self, task_id: str) -> RequestRecord | None:
        """Nobody holds ``task_id`` and it has a result: if a worker refused or aborted it
        because of our request, or an aborter claimed its revoke (and stored that result),
        return that request (the task is revoked); else the task finished on its own, and the
        moot request is dropped (``None``). One atomic step: a backend whose methods can
        interleave with another aborter's overrides it."""
        record = await self.get_request(task_id)
        if record is not None and (
            record.outcome in ("revoked", "aborted") or (record.outcome is None and record.revoking)
        ):
            await self.set_outcome(task_id, "revoked")
            return replace(record, outcome=record.outcome or "revoked")
        await self.clear_request(task_id)
        return None

    async def get_requests(self, task_ids: Sequence[str]) -> dict[str, RequestRecord]:
        """The stored requests of several ids at once; ids without one are left out."""
        records = await asyncio.gather(*(self.get_request(tid) for tid in task_ids))
        return {record.task_id: record for record in records if record is not None}

    # --- abort rules (abort_where); a backend without them says so ------------------
    async def add_rule(self, rule: AbortRule, ttl: float) -> AbortRule:
        """Record ``rule`` durably for ``ttl`` seconds; from then on every start check refuses
        the tasks it matches. Returns it with the control plane's times."""
        (added,) = await self.add_rules([rule], ttl)
        return added

    async def add_rules(self, rules: Sequence[AbortRule], ttl: float) -> list[AbortRule]:
        """:meth:`add_rule` for each of ``rules``, in as few calls as it can. A backend may
        implement either of the two; this one calls its ``add_rule`` once per rule."""
        if type(self).add_rule is AbortBackend.add_rule:
            raise AbortConfigError(f"{type(self).__name__} does not support abort rules")
        return [await self.add_rule(rule, ttl) for rule in rules]

    async def cancel_rule(self, rule_id: str) -> bool:
        """Remove a rule early; ``False`` when there was none (expired, or never)."""
        raise AbortConfigError(f"{type(self).__name__} does not support abort rules")

    async def rules(self) -> list[AbortRule]:
        """The rules in force."""
        return []

    @abc.abstractmethod
    async def workers(self) -> list[WorkerInfo]:
        """Live workers and the tasks each runs."""

    async def find_running(self, task_id: str) -> RunningEntry | None:
        """Where ``task_id`` runs, if a live worker holds it."""
        for info in await self.workers():
            for entry in info.tasks:
                if entry.task_id == task_id:
                    return entry
        return None

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections."""
