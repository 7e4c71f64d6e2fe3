"""The aborter half: record, tell the holders, then wait for them or settle the result ourselves."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from taskiq_abort._results import aborted_result, stored_results
from taskiq_abort._wire.protocol import (
    BATCH,
    ReplyMessage,
    check_grace,
    clean_reason,
    validate_task_id,
)
from taskiq_abort.backends.base import AbortBackend, ReplyWaiter, RequestResult
from taskiq_abort.errors import (
    AbortBackendUnavailableError,
    InvalidTaskIdError,
    TaskiqAbortError,
)
from taskiq_abort.outcome import AbortOutcome, AbortStatus

if TYPE_CHECKING:  # taskiq is imported where a result is stored: `taskiq-abort ID` starts fast
    from taskiq import AsyncResultBackend


class _Tally:
    """What the holders of one task said so far: every holder replies, or a reply read from the
    durable record (no worker named) speaks for the whole task."""

    __slots__ = ("forced", "holders", "pending", "said")

    def __init__(self, holders: tuple[str, ...]) -> None:
        self.holders = holders
        self.pending = set(holders)
        self.said: dict[str, str | None] = {}
        self.forced = False

    def hear(self, reply: ReplyMessage) -> bool:
        """Take ``reply`` in; ``True`` once nothing more is to be heard."""
        self.said.setdefault(reply.status, reply.worker or self.holders[0])
        self.forced = self.forced or reply.forced
        if not reply.worker:  # read from the durable record: the word for the whole task
            return True
        self.pending.discard(reply.worker)
        return not self.pending

    def verdict(self) -> tuple[str, str | None, bool]:
        """``(status, worker, forced)``: ``aborted`` wins over the others (a task delivered to
        several workers is aborted if any copy was), then ``finished``; ``unknown`` only when
        no holder says more. ``forced``: some copy was cancelled when its grace ran out."""
        for status in ("aborted", "finished"):
            if status in self.said:
                return status, self.said[status], self.forced and status == "aborted"
        return "unknown", self.said.get("unknown"), False


def _settled(found: RequestResult) -> bool:
    """An earlier abort already settled the task: aborting twice is harmless, and says the
    same again."""
    return found.outcome in ("aborted", "revoked") or (
        found.outcome == "finished" and found.holder is None
    )


async def _say_again(
    backend: AbortBackend, task_id: str, outcome: str
) -> tuple[AbortStatus, str | None, bool]:
    record = await backend.get_request(task_id)
    if outcome == "finished":
        await backend.clear_request(task_id)
    elif outcome == "revoked":  # said again only once it would survive a failover
        await backend.set_outcome(task_id, "revoked")
    worker, forced = (record.worker, record.forced) if record else (None, False)
    return AbortStatus(outcome), worker, forced


async def _nobody_runs_it(
    backend: AbortBackend,
    result_backend: AsyncResultBackend[Any] | None,
    task_id: str,
    reason: str | None,
) -> tuple[AbortStatus, str | None]:
    """Nobody runs ``task_id``, and any worker that picks it up from now on sees the request
    and stops: ``revoked`` (its result stored now), or ``finished`` if it has a result."""
    result_backend = stored_results(result_backend)
    if result_backend is not None:
        try:
            # is_result_ready, never get_result: with keep_results=False a read consumes it.
            if await result_backend.is_result_ready(task_id):
                # Either it finished before our request, or a worker started it just
                # after and found the request: the record tells which.
                record = await backend.settle_finished(task_id)
                if record is not None:
                    return AbortStatus.REVOKED, record.worker
                return AbortStatus.FINISHED, None
            # Claimed before the result is stored: an aborter that then finds that result must
            # not take it for the task's own (settle_finished).
            await backend.mark_revoking(task_id)
            await result_backend.set_result(task_id, aborted_result(task_id, reason))
        except TaskiqAbortError:
            raise
        except Exception as exc:
            raise AbortBackendUnavailableError(
                f"task {task_id} is revoked, but its result backend failed ({exc!r}): "
                "callers waiting on its result will wait until a worker picks it up"
            ) from exc
    await backend.set_outcome(task_id, "revoked")
    return AbortStatus.REVOKED, None


def requested_by() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def checked(reason: str | None, grace: float | None, timeout: float) -> tuple[str | None, float]:
    """The reason and the grace period as stored; ``ValueError`` for a negative timeout (also
    run before a cascade's or ``abort_where``'s rule is recorded)."""
    reason, grace_s = clean_reason(reason), check_grace(grace)
    if timeout < 0:
        raise ValueError(f"timeout must be >= 0, not {timeout}")
    return reason, grace_s


CONCURRENCY = 32  # per-id follow-ups in flight in a bulk abort (revoked tasks' results)
_FIRST_POLL = 1.0


class _Run:
    """One abort of one id or many, once every request is recorded: hear the holders of the
    held ids, settle the others, and put each id's answer (an outcome, or its error) in
    ``answers``."""

    def __init__(
        self,
        backend: AbortBackend,
        result_backend: AsyncResultBackend[Any] | None,
        waiter: ReplyWaiter | None,
        answers: dict[str, AbortOutcome | TaskiqAbortError],
    ) -> None:
        self.backend = backend
        self.result_backend = result_backend
        self.waiter = waiter
        self.answers = answers
        self.started = time.perf_counter()
        self.found: dict[str, RequestResult] = {}
        self.deadlines: list[tuple[float, list[str]]] = []

    def recorded(
        self, task_ids: list[str], results: Iterable[RequestResult], deadline: float
    ) -> None:
        """What requesting ``task_ids`` found; their holders are heard until ``deadline``."""
        self.found.update(zip(task_ids, results, strict=True))
        self.deadlines.append((deadline, task_ids))

    def done(
        self, task_id: str, status: AbortStatus, worker: str | None, forced: bool = False
    ) -> None:
        elapsed = time.perf_counter() - self.started
        why = self.found[task_id].reason  # the first request's reason stands
        self.answers[task_id] = AbortOutcome(task_id, status, worker, why, elapsed, forced)

    async def settle(self) -> None:
        tallies: dict[str, _Tally] = {}
        later: list[tuple[str, str | None]] = []
        for task_id, result in self.found.items():
            if result.holders and not _settled(result):
                if self.waiter is None:
                    self.done(task_id, AbortStatus.UNCONFIRMED, result.holder)
                else:
                    tallies[task_id] = _Tally(result.holders)
            else:
                later.append((task_id, None))
        # Ids nobody holds are settled while the holders of the others stop theirs (one side
        # alone is awaited as it is: a single abort makes no task of its own).
        if tallies and later:
            await asyncio.gather(self._hear(tallies), self._follow_ups(later))
        elif tallies:
            await self._hear(tallies)
        else:
            await self._follow_ups(later)

    async def _hear(self, tallies: dict[str, _Tally]) -> None:
        assert self.waiter is not None
        heard = await _hear_all(self.backend, self.waiter, tallies, self.deadlines)
        after: list[tuple[str, str | None]] = []
        for task_id, verdict in heard.items():
            if verdict is None:
                self.done(task_id, AbortStatus.UNCONFIRMED, self.found[task_id].holder)
                continue
            status, worker, forced = verdict
            if status == "aborted":
                self.done(task_id, AbortStatus.ABORTED, worker, forced)
            elif status == "finished":
                after.append((task_id, worker or ""))
            else:  # "unknown": its attempts ended without a result (a retry may come): settle it
                after.append((task_id, None))
        await self._follow_ups(after)

    async def _follow_ups(self, follow_ups: list[tuple[str, str | None]]) -> None:
        """:meth:`_follow_up` for each ``(id, finished_by)``, :data:`CONCURRENCY` at a time;
        an id's error is its answer."""
        if not follow_ups:  # every held id answered (the common single abort)
            return
        if len(follow_ups) == 1:  # awaited as it is: no task of its own
            ((task_id, finished_by),) = follow_ups
            try:
                await self._follow_up(task_id, finished_by)
            except TaskiqAbortError as exc:
                self.answers[task_id] = exc
            return
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(task_id: str, finished_by: str | None) -> None:
            async with gate:
                await self._follow_up(task_id, finished_by)

        steps = (one(task_id, finished_by) for task_id, finished_by in follow_ups)
        results = await asyncio.gather(*steps, return_exceptions=True)
        for (task_id, _), result in zip(follow_ups, results, strict=True):
            if isinstance(result, TaskiqAbortError):
                self.answers[task_id] = result
            elif isinstance(result, BaseException):
                raise result  # a bug, or cancelled: not an answer

    async def _follow_up(self, task_id: str, finished_by: str | None) -> None:
        """Settle ``task_id`` without its holders: ``finished_by`` one of them (or ``""``),
        said again if an earlier abort settled it, else nobody runs it."""
        result = self.found[task_id]
        if finished_by is not None:
            await self.backend.clear_request(task_id)
            self.done(task_id, AbortStatus.FINISHED, finished_by or None)
        elif _settled(result):
            assert result.outcome is not None
            self.done(task_id, *await _say_again(self.backend, task_id, result.outcome))
        else:
            status, worker = await _nobody_runs_it(
                self.backend, self.result_backend, task_id, result.reason
            )
            self.done(task_id, status, worker)


async def abort_task(
    backend: AbortBackend,
    result_backend: AsyncResultBackend[Any] | None,
    task_id: str,
    *,
    reason: str | None = None,
    wait: bool = True,
    timeout: float = 5.0,
    grace: float | None = None,
) -> AbortOutcome:
    """Abort ``task_id``; see :func:`taskiq_abort.abort` for the meaning of each status. The
    steps of :func:`abort_tasks_each` for one id, its request sent by ``backend.request``
    (a round trip of its own, quicker than a bulk request)."""
    task_id = validate_task_id(task_id)
    reason, grace_s = checked(reason, grace, timeout)
    answers: dict[str, AbortOutcome | TaskiqAbortError] = {}
    run = _Run(backend, result_backend, None, answers)
    # Listen before we publish, or a fast reply could slip past us.
    run.waiter = waiter = await backend.prepare_reply(task_id) if wait else None
    try:
        found = await backend.request(task_id, reason, requested_by(), grace_s)
        run.recorded([task_id], (found,), run.started + timeout)
        await run.settle()
    finally:
        if waiter is not None:
            backend.discard_reply(task_id, waiter)
    answer = answers[task_id]
    if isinstance(answer, TaskiqAbortError):
        raise answer
    return answer


def raise_first(answers: list[AbortOutcome | TaskiqAbortError]) -> list[AbortOutcome]:
    """The outcomes, or the first error among them raised."""
    for answer in answers:
        if isinstance(answer, BaseException):
            raise answer
    return answers  # type: ignore[return-value]


async def abort_tasks_each(
    backend: AbortBackend,
    result_backend: AsyncResultBackend[Any] | None,
    task_ids: Iterable[str],
    *,
    reason: str | None = None,
    wait: bool = True,
    timeout: float = 5.0,
    grace: float | None = None,
    invalid_in_place: bool = False,
) -> list[AbortOutcome | TaskiqAbortError]:
    """Abort many tasks at once (see :func:`taskiq_abort.abort_many`), with each id's error in
    its place instead of raised (:func:`raise_first` raises it; the CLI and the web API report
    them next to the others' outcomes). With ``invalid_in_place``, an
    invalid id gets its :class:`InvalidTaskIdError` as its answer (ids read from the registry,
    which any client may fill); otherwise it is raised before anything is sent."""
    ids = list(task_ids)
    answers: dict[str, AbortOutcome | TaskiqAbortError] = {}
    for task_id in ids:  # all, before anything is sent
        try:
            validate_task_id(task_id)
        except InvalidTaskIdError as exc:
            if not invalid_in_place:
                raise
            answers[task_id] = exc
    reason, grace_s = checked(reason, grace, timeout)
    run = _Run(backend, result_backend, None, answers)
    unique = [t for t in dict.fromkeys(ids) if t not in answers]  # once each
    # Listen before we publish, or a fast reply could slip past us.
    run.waiter = waiter = await backend.prepare_replies(unique) if wait and unique else None
    try:
        for start in range(0, len(unique), BATCH):  # each batch waits `timeout` from its send
            batch = unique[start : start + BATCH]
            try:
                results = await backend.request_many(batch, reason, requested_by(), grace_s)
            except TaskiqAbortError as exc:  # this batch and the rest: not (all) recorded
                answers.update(dict.fromkeys(unique[start:], exc))
                break
            run.recorded(batch, results, time.perf_counter() + timeout)
        await run.settle()
    finally:
        if waiter is not None:
            backend.discard_replies(unique, waiter)
    return [answers[task_id] for task_id in ids]


async def _next(waiter: ReplyWaiter, timeout: float) -> ReplyMessage:
    """The next reply, or ``asyncio.TimeoutError``; on 3.11+ without the task of its own that
    ``wait_for`` makes (two event-loop turns between a reply's arrival and the caller)."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(timeout):
            return await waiter.get()
    return await asyncio.wait_for(waiter.get(), timeout)


async def _hear_all(
    backend: AbortBackend,
    waiter: ReplyWaiter,
    tallies: dict[str, _Tally],
    deadlines: list[tuple[float, list[str]]],
) -> dict[str, tuple[str, str | None, bool] | None]:
    """Wait for the replies about every id of ``tallies`` (one, or a bulk abort's), each batch
    until its deadline (``None``: no answer in time). Replies come on one queue. A reply may
    be lost in a reconnect, so when none has come for a second (then 2, 4, 5 s...), the durable
    records of the ids still waiting are read (``backend.recheck``: one pipelined read per
    1,000); not while replies keep coming, which would cost Redis 1,000s of reads a second for
    nothing."""
    verdicts: dict[str, tuple[str, str | None, bool] | None] = {}
    pending = dict(tallies)

    def take(reply: ReplyMessage) -> None:
        tally = pending.get(reply.task_id)
        if tally is not None and tally.hear(reply):
            verdicts[reply.task_id] = tally.verdict()
            del pending[reply.task_id]

    poll = _FIRST_POLL
    quiet_since = time.perf_counter()  # when the last reply came
    k = 0  # the first batch whose deadline is still ahead
    while pending:
        now = time.perf_counter()
        due = deadlines[k][0] if k < len(deadlines) else float("inf")
        wake = min(quiet_since + poll, due)
        if wake > now:
            try:
                take(await _next(waiter, wake - now))
            except asyncio.TimeoutError:
                continue
            quiet_since = time.perf_counter()
        while not waiter.empty():  # a message of many replies came in at once
            take(waiter.get_nowait())
        if wake > now:
            continue
        if now >= quiet_since + poll:
            for reply in await backend.recheck(list(pending)):
                take(reply)
            poll = min(poll * 2, 5.0)
            quiet_since = time.perf_counter()
        else:  # this batch's time is up: a last look at the records, then no answer
            late = [task_id for task_id in deadlines[k][1] if task_id in pending]
            for reply in await backend.recheck(late):
                take(reply)
            for task_id in late:
                if pending.pop(task_id, None) is not None:
                    verdicts[task_id] = None
            k += 1
    return verdicts
