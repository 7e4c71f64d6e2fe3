"""What the operator API does, without HTTP: list, look up and abort tasks of one broker."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from taskiq_abort._read.names import resolve_task_name
from taskiq_abort._read.state import (
    FINAL,
    request_fields,
    running_row,
    soonest_first,
    task_state,
)
from taskiq_abort._results import stored_results
from taskiq_abort._wire.protocol import validate_task_id
from taskiq_abort.api import find_middleware
from taskiq_abort.backends.base import RequestRecord
from taskiq_abort.errors import AbortBackendUnavailableError
from taskiq_abort.outcome import AbortOutcome, RunningEntry, WorkerInfo
from taskiq_abort.web import models

if TYPE_CHECKING:
    from taskiq import AsyncBroker

RECENT = 200
"""Outcomes kept for the dashboard's "recent outcomes"."""


def _running(
    entry: RunningEntry, info: WorkerInfo, request: RequestRecord | None, now: float
) -> models.RunningTask:
    return models.RunningTask(**running_row(entry, info, request, now))


class TaskService:
    """The broker's abort control plane, read and driven for operators.

    :raises AbortConfigError: the broker has no ``AbortMiddleware`` (checked at once).
    """

    def __init__(self, broker: AsyncBroker) -> None:
        self.broker = broker
        self.middleware = find_middleware(broker)
        self.backend = self.middleware.backend
        self.recent: deque[models.RecentOutcome] = deque(maxlen=RECENT)
        self._reading: asyncio.Future[list[WorkerInfo]] | None = None

    async def _workers(self) -> list[WorkerInfo]:
        """The live workers, sorted. Requests that come while a read of the registry is under
        way share it (a dashboard's parallel polls, several dashboards): with 10,000 running
        tasks one read takes a while. A finished read is never reused."""
        current = self._reading
        if current is None or current.done():
            current = self._reading = asyncio.ensure_future(self._read_workers())
        return list(await asyncio.shield(current))

    async def _read_workers(self) -> list[WorkerInfo]:
        workers = await self.backend.workers()
        workers.sort(key=lambda w: (w.host, w.started, w.worker_id))  # stable across calls
        return workers

    async def _entries(self) -> list[tuple[RunningEntry, WorkerInfo]]:
        return [(entry, info) for info in await self._workers() for entry in info.tasks]

    async def list_tasks(
        self,
        name: str | None,
        worker: str | None,
        offset: int,
        limit: int,
        labels: dict[str, str] | None = None,
    ) -> models.TaskPage:
        """Running tasks, filtered by name (``crunch`` or ``module:crunch``), by worker id
        (or a prefix of it) and by indexed labels (all of them)."""
        entries = await self._entries()
        if name is not None:
            name = resolve_task_name(name, {e.task_name for e, _ in entries}) or name
        entries = [
            (entry, info)
            for entry, info in entries
            if (name is None or entry.task_name == name)
            and (worker is None or info.worker_id.startswith(worker))
            and all(entry.label_map.get(k) == v for k, v in (labels or {}).items())
        ]
        page = entries[offset : offset + limit]
        requests = await self.backend.get_requests([entry.task_id for entry, _ in page])
        now = time.time()
        return models.TaskPage(
            tasks=[_running(e, i, requests.get(e.task_id), now) for e, i in page],
            total=len(entries),
            offset=offset,
            limit=limit,
        )

    async def workers(self) -> models.WorkerList:
        infos = await self._workers()
        now = time.time()
        return models.WorkerList(
            workers=[
                models.Worker(
                    worker_id=w.worker_id,
                    host=w.host,
                    pid=w.pid,
                    started=w.started,
                    up_s=round(max(0.0, now - w.started), 3),
                    running=len(w.tasks),
                )
                for w in infos
            ],
            running=sum(len(w.tasks) for w in infos),
        )

    async def task_state(self, task_id: str) -> models.TaskState:
        """Running where, abort requested, its outcome, a stored result, or unknown."""
        task_id = validate_task_id(task_id)
        running = next(((e, i) for e, i in await self._entries() if e.task_id == task_id), None)
        request = await self.backend.get_request(task_id)
        has_result = await self._has_result(task_id)
        state = task_state(running is not None, request, has_result)
        if state in FINAL:
            running = None  # the entry of an attempt that already stopped (see task_state)
        return models.TaskState(
            task_id=task_id,
            state=state,
            running=None if running is None else _running(*running, request, time.time()),
            abort_request=None
            if request is None
            else models.AbortRequestInfo(**request_fields(request)),
            has_result=has_result,
        )

    async def _has_result(self, task_id: str) -> bool | None:
        result_backend = stored_results(self.broker.result_backend)
        if result_backend is None:
            return None
        try:  # is_result_ready, never get_result: with keep_results=False a read consumes it
            return bool(await result_backend.is_result_ready(task_id))
        except Exception as exc:
            raise AbortBackendUnavailableError(
                f"the result backend could not be read for task {task_id}: {type(exc).__name__}"
            ) from exc

    async def abort(
        self,
        task_id: str,
        reason: str | None,
        wait: bool,
        timeout: float | None,
        grace: float | None = None,
        cascade: bool = False,
    ) -> AbortOutcome:
        """Abort one task (see :func:`taskiq_abort.abort`), and remember the outcome."""
        outcome = await self.middleware.abort(
            task_id, reason=reason, wait=wait, timeout=timeout, grace=grace, cascade=cascade
        )
        self._remember(outcome)
        return outcome

    def _remember(self, outcome: AbortOutcome) -> None:
        data: dict[str, Any] = outcome.to_dict()
        self.recent.appendleft(models.RecentOutcome(**data, at=time.time()))

    async def abort_by_name(
        self,
        task_name: str,
        reason: str | None,
        wait: bool,
        timeout: float | None,
        grace: float | None = None,
    ) -> models.BulkAbortResult:
        """Abort every running task called ``task_name`` (``crunch`` or ``module:crunch``);
        errors are counted as ``failed``."""
        entries = await self._entries()
        task_name = resolve_task_name(task_name, {e.task_name for e, _ in entries}) or task_name
        ids = list(dict.fromkeys(e.task_id for e, _ in entries if e.task_name == task_name))
        # Not those already aborted: their entries linger until the worker's next registry batch.
        done = await self.backend.get_requests(ids)
        ids = [t for t in ids if t not in done or done[t].outcome not in FINAL]
        # One bulk abort: one Redis call per 1,000 ids, one message per holding worker.
        results = await self.middleware.abort_each(
            ids, reason=reason, wait=wait, timeout=timeout, grace=grace, invalid_in_place=True
        )
        outcomes = [r for r in results if isinstance(r, AbortOutcome)]
        for outcome in outcomes:
            self._remember(outcome)
        counts = {"aborted": 0, "revoked": 0, "finished": 0, "unconfirmed": 0, "failed": 0}
        for outcome in outcomes:
            counts[outcome.status.value] += 1
        counts["failed"] = len(results) - len(outcomes)
        if ids and not outcomes:
            failure = next(r for r in results if isinstance(r, BaseException))
            raise failure  # every one failed (Redis down): one error, not a page of zeros
        return models.BulkAbortResult(
            task_name=task_name,
            matched=len(ids),
            counts=counts,
            outcomes=[models.Outcome(**o.to_dict()) for o in outcomes],  # type: ignore[arg-type]
        )

    async def abort_where(self, body: models.WhereBody) -> models.WhereResult:
        """``abort_where`` (see :func:`taskiq_abort.abort_where`): the rule and the outcome of
        each running task it matched."""
        found = await self.middleware.abort_where(
            body.labels,
            task_name=body.task_name,
            reason=body.reason,
            ttl=body.ttl,
            wait=body.wait,
            timeout=body.timeout,
            grace=body.grace,
        )
        counts = {"aborted": 0, "revoked": 0, "finished": 0, "unconfirmed": 0}
        for outcome in found.running:
            self._remember(outcome)
            counts[outcome.status.value] += 1
        return models.WhereResult(
            rule=models.Rule(**found.rule.to_dict()),  # type: ignore[arg-type]
            matched=len(found.running),
            counts=counts,
            outcomes=[models.Outcome(**o.to_dict()) for o in found.running],  # type: ignore[arg-type]
        )

    async def rules(self, limit: int) -> models.RuleList:
        """The abort rules in force, soonest to expire first: the first ``limit``."""
        found = soonest_first(await self.middleware.abort_rules())
        shown = [models.Rule(**r.to_dict()) for r in found[:limit]]  # type: ignore[arg-type]
        return models.RuleList(rules=shown, total=len(found))

    async def cancel_rule(self, rule_id: str) -> bool:
        return await self.middleware.cancel_rule(rule_id)

    def recent_outcomes(self, limit: int) -> models.RecentOutcomes:
        return models.RecentOutcomes(outcomes=list(self.recent)[:limit])
