"""The in-process control plane, for ``InMemoryBroker`` and single-process apps.

Same semantics as the Redis backend (durable requests with a TTL, leased registry, asynchronous
delivery), without a server: use it to unit-test abort handling.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from taskiq_abort._wire.protocol import ReplyMessage, expired_reason
from taskiq_abort.backends.base import (
    DEFAULT_LEASE,
    DEFAULT_REQUEST_TTL,
    AbortBackend,
    AbortHandler,
    AbortNotice,
    RequestRecord,
    RequestResult,
    ResyncHook,
)
from taskiq_abort.errors import AbortBackendUnavailableError
from taskiq_abort.observability import events
from taskiq_abort.outcome import AbortRule, RunningEntry, WorkerInfo

logger = logging.getLogger("taskiq_abort")


@dataclass
class _Worker:
    info: dict[str, str]
    expires: float
    tasks: dict[str, RunningEntry] = field(default_factory=dict)


def _deliver(handler: AbortHandler, notices: list[AbortNotice]) -> None:
    """One worker's share of a request: all its ids in one turn of the loop."""
    for notice in notices:
        try:
            handler(notice)
        except Exception:  # one failure must not keep the others from their worker
            logger.exception("taskiq-abort: handling abort of %s failed", notice.task_id)


class MemoryAbortBackend(AbortBackend):
    """Everything in this process's memory; for ``InMemoryBroker`` and tests."""

    def __init__(
        self, *, request_ttl: float = DEFAULT_REQUEST_TTL, lease: float = DEFAULT_LEASE
    ) -> None:
        self.request_ttl = request_ttl
        self.lease = lease
        self._requests: dict[str, tuple[float, RequestRecord]] = {}
        self._graces: dict[str, float] = {}
        self._etas: dict[str, float] = {}  # task id -> when its ETA marker expires (monotonic)
        self._workers: dict[str, _Worker] = {}
        self._rules: dict[str, tuple[float, AbortRule]] = {}  # id -> (expiry, monotonic)
        # Each worker's handler, with the loop it was registered from: a worker of an event
        # loop that has ended (``asyncio.run`` per test) must not be called from the next one.
        self._handlers: dict[str, tuple[asyncio.AbstractEventLoop, AbortHandler]] = {}
        self._waiters = {}

    def __repr__(self) -> str:
        return "MemoryAbortBackend()"

    def _record(self, task_id: str) -> RequestRecord | None:
        item = self._requests.get(task_id)
        if item is None:
            return None
        if item[0] < time.monotonic():
            del self._requests[task_id]
            self._graces.pop(task_id, None)
            return None
        return item[1]

    def _live_request(self, task_id: str) -> RequestRecord | None:
        """The request that stops ``task_id`` at its start: not one settled ``finished``
        (the task ended with its own result first; its next attempt runs)."""
        record = self._record(task_id)
        return None if record is None or record.outcome == "finished" else record

    def _live(self) -> dict[str, _Worker]:
        now = time.monotonic()
        for wid in [w for w, state in self._workers.items() if state.expires < now]:
            del self._workers[wid]
        return self._workers

    async def sync(
        self,
        worker_id: str,
        starts: list[RunningEntry],
        finishes: list[RunningEntry],
    ) -> tuple[bool, list[AbortNotice]]:
        worker = self._live().get(worker_id)
        aborted = []
        for entry in starts:
            record = self._live_request(entry.task_id)
            late = time.time() - entry.expires_at if entry.expires_at is not None else 0.0
            rule = self._rule_for(entry) if entry.labels else None
            if record is not None:
                if record.outcome is None:
                    await self.set_outcome(entry.task_id, "revoked", worker_id)
                aborted.append(AbortNotice(entry.task_id, record.reason))
            elif rule is not None:  # recorded as a revoked request, as SYNC does
                refused = RequestRecord(
                    entry.task_id, rule.reason, rule.created_at, rule.requested_by, "revoked",
                    worker_id,
                )  # fmt: skip
                self._requests[entry.task_id] = (self._rules[rule.rule_id][0], refused)
                aborted.append(AbortNotice(entry.task_id, rule.reason))
            elif late > 0:  # past its deadline (one process: one clock)
                aborted.append(AbortNotice(entry.task_id, expired_reason(late), expired=True))
            elif worker is not None:
                worker.tasks[entry.task_id] = entry
        for entry in finishes:
            if worker is not None:
                current = worker.tasks.get(entry.task_id)
                if current is not None and current.run_id == entry.run_id:
                    del worker.tasks[entry.task_id]
        return worker is not None, aborted

    async def register(
        self, worker_id: str, info: dict[str, str], running: list[RunningEntry]
    ) -> list[AbortNotice]:
        worker = _Worker(dict(info), time.monotonic() + self.lease)
        worker.tasks = {entry.task_id: entry for entry in running}
        self._workers[worker_id] = worker
        for entry in running:  # a rule recorded while this worker was away applies too
            rule = self._rule_for(entry) if entry.labels else None
            if rule is not None and self._live_request(entry.task_id) is None:
                pending = RequestRecord(
                    entry.task_id, rule.reason, rule.created_at, rule.requested_by, None, None
                )
                self._requests[entry.task_id] = (self._rules[rule.rule_id][0], pending)
        return [
            AbortNotice(entry.task_id, record.reason, grace=self._graces.get(entry.task_id, 0.0))
            for entry in running
            if (record := self._live_request(entry.task_id)) is not None
        ]

    async def heartbeat(self, worker_id: str) -> bool:
        worker = self._live().get(worker_id)
        if worker is None:
            return False
        worker.expires = time.monotonic() + self.lease
        return True

    async def unregister(self, worker_id: str) -> None:
        self._workers.pop(worker_id, None)

    async def confirm(
        self,
        task_id: str,
        outcome: str,
        worker_id: str,
        reply_to: Iterable[str] = (),
        forced: bool = False,
    ) -> None:
        if outcome != "unknown":  # "unknown" only replies (see scripts.CONFIRM)
            await self.set_outcome(task_id, outcome, worker_id, forced)
        self._deliver_reply(ReplyMessage(task_id, outcome, worker_id, forced))

    async def listen(self, worker_id: str, handler: AbortHandler, resync: ResyncHook) -> None:
        entry = (asyncio.get_running_loop(), handler)
        self._handlers[worker_id] = entry
        try:
            await resync()
            await asyncio.Event().wait()  # until cancelled
        finally:
            if self._handlers.get(worker_id) is entry:
                del self._handlers[worker_id]

    async def note_eta(self, task_id: str, delay: float) -> None:
        now = time.monotonic()
        if len(self._etas) >= 1024:  # forget the markers of tasks long due
            self._etas = {tid: end for tid, end in self._etas.items() if end > now}
        self._etas[task_id] = now + delay + self.request_ttl

    def _expiry(self, task_id: str) -> float:
        """When a request made now expires: after ``request_ttl``, or when the task's ETA
        marker does (a task kicked with a longer delay), whichever is later."""
        return max(time.monotonic() + self.request_ttl, self._etas.get(task_id, 0.0))

    async def request(
        self, task_id: str, reason: str | None, requested_by: str, grace: float = 0.0
    ) -> RequestResult:
        return (await self.request_many((task_id,), reason, requested_by, grace))[0]

    async def request_many(
        self,
        task_ids: Sequence[str],
        reason: str | None,
        requested_by: str,
        grace: float = 0.0,
    ) -> list[RequestResult]:
        """Record every request, then one delivery per holding worker with all its ids."""
        loop = asyncio.get_running_loop()
        live = self._live()
        found: list[tuple[RequestRecord, float, list[tuple[str, RunningEntry]]]] = []
        for task_id in task_ids:
            record = self._record(task_id)
            if record is None:
                record = RequestRecord(task_id, reason, time.time(), requested_by, None, None)
            # The nearest forced stop stands, and the request outlives it (see scripts.REQUEST).
            stop = min(grace, self._graces.get(task_id, grace))
            self._graces[task_id] = stop
            expiry = max(self._expiry(task_id), time.monotonic() + stop + self.request_ttl)
            self._requests[task_id] = (expiry, record)
            holders = [(wid, w.tasks[task_id]) for wid, w in live.items() if task_id in w.tasks]
            events.request_seen(task_id, record.requested_at * 1000, record.requested_by)
            found.append((record, stop, holders))
        batches: dict[str, list[AbortNotice]] = {}
        for record, stop, holders in found:
            notice = AbortNotice(record.task_id, record.reason, "memory", grace=stop)
            for wid, _ in holders:
                batches.setdefault(wid, []).append(notice)
        reached: set[str] = set()
        for wid, notices in batches.items():  # each holder only; later, like a real message
            owner, handler = self._handlers.get(wid, (None, None))
            if owner is loop and handler is not None:
                loop.call_soon(_deliver, handler, notices)
                reached.add(wid)
        return [
            RequestResult(
                holders=tuple(wid for wid, _ in holders),
                outcome=record.outcome,
                receivers=sum(1 for wid, _ in holders if wid in reached),
                reason=record.reason,
            )
            for record, _, holders in found
        ]

    async def set_outcome(
        self, task_id: str, outcome: str, worker_id: str = "", forced: bool = False
    ) -> None:
        item = self._requests.get(task_id)
        if item is not None and item[1].outcome is None:  # the first word stands
            expires, record = item
            worker = worker_id or record.worker
            updated = replace(record, outcome=outcome, worker=worker, forced=forced)
            self._requests[task_id] = (expires, updated)

    async def mark_revoking(self, task_id: str) -> None:
        record = self._record(task_id)
        if record is None:
            raise AbortBackendUnavailableError(
                f"the abort request of task {task_id} is gone (expired?): nothing was "
                "revoked; abort it again"
            )
        self._requests[task_id] = (self._requests[task_id][0], replace(record, revoking=True))

    async def clear_request(self, task_id: str) -> None:
        self._requests.pop(task_id, None)
        self._graces.pop(task_id, None)

    async def get_request(self, task_id: str) -> RequestRecord | None:
        return self._record(task_id)

    def _rule_for(self, entry: RunningEntry) -> AbortRule | None:
        return next((rule for rule in self._live_rules() if rule.matches(entry)), None)

    def _live_rules(self) -> list[AbortRule]:
        now = time.monotonic()
        self._rules = {rid: item for rid, item in self._rules.items() if item[0] > now}
        return [rule for _, rule in self._rules.values()]

    async def add_rules(self, rules: Sequence[AbortRule], ttl: float) -> list[AbortRule]:
        now = time.time()
        added = [replace(rule, created_at=now, expires_at=now + ttl) for rule in rules]
        for rule in added:
            self._rules[rule.rule_id] = (time.monotonic() + ttl, rule)
        return added

    async def cancel_rule(self, rule_id: str) -> bool:
        self._live_rules()
        return self._rules.pop(rule_id, None) is not None

    async def rules(self) -> list[AbortRule]:
        return self._live_rules()

    async def workers(self) -> list[WorkerInfo]:
        return [
            WorkerInfo.from_info(
                wid,
                state.info,
                (replace(e, worker=wid) for e in state.tasks.values()),
            )
            for wid, state in self._live().items()
        ]

    async def close(self) -> None:
        self._cancel_waiters()
