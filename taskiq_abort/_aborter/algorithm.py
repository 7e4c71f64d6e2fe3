"""The aborter half: record, tell the holders, then wait for them or settle the result ourselves."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Coroutine, Iterable
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


async def _replies(
    backend: AbortBackend,
    task_id: str,
    waiter: ReplyWaiter,
    holders: tuple[str, ...],
    deadline: float,
) -> tuple[str, str | None, bool] | None:
    """Wait until every holder replied (see :class:`_Tally`), or ``None`` if one did not in
    time."""
    tally = _Tally(holders)
    while True:
        reply = await backend.wait_reply(task_id, waiter, deadline - time.perf_counter())
        if reply is None:
            return None
        if tally.hear(reply):
            return tally.verdict()


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


def _requested_by() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


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
    """Abort ``task_id``; see :func:`taskiq_abort.abort` for the meaning of each status."""
    task_id = validate_task_id(task_id)
    reason = clean_reason(reason)
    grace_s = check_grace(grace)
    if timeout < 0:
        raise ValueError(f"timeout must be >= 0, not {timeout}")
    started = time.perf_counter()

    def done(status: AbortStatus, worker: str | None = None, forced: bool = False) -> AbortOutcome:
        elapsed = time.perf_counter() - started
        return AbortOutcome(task_id, status, worker, reason, elapsed, forced)

    # Listen before we publish, or a fast reply could slip past us.
    waiter = await backend.prepare_reply(task_id) if wait else None
    try:
        found = await backend.request(task_id, reason, _requested_by(), grace_s)
        reason = found.reason  # the first request's reason stands, as in TaskAbortedError
        if _settled(found):
            assert found.outcome is not None
            return done(*await _say_again(backend, task_id, found.outcome))
        if found.holders:
            if waiter is None:
                return done(AbortStatus.UNCONFIRMED, found.holder)
            deadline = started + timeout
            heard = await _replies(backend, task_id, waiter, found.holders, deadline)
            if heard is None:
                return done(AbortStatus.UNCONFIRMED, found.holder)
            status, worker, forced = heard
            if status == "aborted":
                return done(AbortStatus.ABORTED, worker, forced)
            if status == "finished":
                await backend.clear_request(task_id)
                return done(AbortStatus.FINISHED, worker)
            # "unknown": its attempts ended without a result (a retry may come): settle it below.
        return done(*await _nobody_runs_it(backend, result_backend, task_id, reason))
    finally:
        if waiter is not None:
            backend.discard_reply(task_id, waiter)


CONCURRENCY = 32  # per-id follow-ups in flight in a bulk abort (revoked tasks' results)
_FIRST_POLL = 1.0


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
    reason = clean_reason(reason)
    grace_s = check_grace(grace)
    if timeout < 0:
        raise ValueError(f"timeout must be >= 0, not {timeout}")
    started = time.perf_counter()
    unique = [t for t in dict.fromkeys(ids) if t not in answers]  # once each
    found: dict[str, RequestResult] = {}

    def done(task_id: str, status: AbortStatus, worker: str | None, forced: bool = False) -> None:
        elapsed = time.perf_counter() - started
        why = found[task_id].reason  # the first request's reason stands
        answers[task_id] = AbortOutcome(task_id, status, worker, why, elapsed, forced)

    # Listen before we publish, or a fast reply could slip past us.
    waiter = await backend.prepare_replies(unique) if wait and unique else None
    try:
        deadlines: list[tuple[float, list[str]]] = []
        for start in range(0, len(unique), BATCH):  # each batch waits `timeout` from its send
            batch = unique[start : start + BATCH]
            try:
                results = await backend.request_many(batch, reason, _requested_by(), grace_s)
            except TaskiqAbortError as exc:  # this batch and the rest: not (all) recorded
                answers.update(dict.fromkeys(unique[start:], exc))
                break
            deadlines.append((time.perf_counter() + timeout, batch))
            found.update(zip(batch, results, strict=True))
        tallies: dict[str, _Tally] = {}
        later: list[str] = []
        for task_id, result in found.items():
            if result.holders and not _settled(result):
                if waiter is None:
                    done(task_id, AbortStatus.UNCONFIRMED, result.holder)
                else:
                    tallies[task_id] = _Tally(result.holders)
            else:
                later.append(task_id)

        async def follow_up(task_id: str, finished_by: str | None = None) -> None:
            result = found[task_id]
            if finished_by is not None:
                await backend.clear_request(task_id)
                done(task_id, AbortStatus.FINISHED, finished_by or None)
            elif _settled(result):
                assert result.outcome is not None
                done(task_id, *await _say_again(backend, task_id, result.outcome))
            else:
                status, worker = await _nobody_runs_it(
                    backend, result_backend, task_id, result.reason
                )
                done(task_id, status, worker)

        async def hear() -> None:
            assert waiter is not None or not tallies
            heard = await _hear_all(backend, waiter, tallies, deadlines) if waiter else {}
            after: list[tuple[str, str | None]] = []
            for task_id, verdict in heard.items():
                if verdict is None:
                    done(task_id, AbortStatus.UNCONFIRMED, found[task_id].holder)
                    continue
                status, worker, forced = verdict
                if status == "aborted":
                    done(task_id, AbortStatus.ABORTED, worker, forced)
                elif status == "finished":
                    after.append((task_id, worker or ""))
                else:  # "unknown": its attempts ended without a result: settle it ourselves
                    after.append((task_id, None))
            await _bounded(answers, [follow_up(t, w) for t, w in after], [t for t, _ in after])

        # Ids nobody holds are settled while the holders of the others stop theirs.
        await asyncio.gather(hear(), _bounded(answers, [follow_up(t) for t in later], later))
    finally:
        if waiter is not None:
            backend.discard_replies(unique, waiter)
    return [answers[task_id] for task_id in ids]


async def _bounded(
    answers: dict[str, AbortOutcome | TaskiqAbortError],
    steps: list[Coroutine[Any, Any, None]],
    task_ids: list[str],
) -> None:
    """Run ``steps`` (one per id), :data:`CONCURRENCY` at a time; an id's error is its answer."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(step: Coroutine[Any, Any, None]) -> None:
        async with gate:
            await step

    results = await asyncio.gather(*(one(step) for step in steps), return_exceptions=True)
    for task_id, result in zip(task_ids, results, strict=True):
        if isinstance(result, TaskiqAbortError):
            answers[task_id] = result
        elif isinstance(result, BaseException):
            raise result  # a bug, or cancelled: not an answer


async def _hear_all(
    backend: AbortBackend,
    waiter: ReplyWaiter,
    tallies: dict[str, _Tally],
    deadlines: list[tuple[float, list[str]]],
) -> dict[str, tuple[str, str | None, bool] | None]:
    """Wait for the replies about every id of ``tallies``, each batch until its deadline
    (``None``: no answer in time). Replies come on one queue. A reply may be lost in a
    reconnect, so when none has come for a second (then 2, 4, 5 s...), the durable records of
    the ids still waiting are read (one pipelined read per 1,000), as a single abort does; not
    while replies keep coming, which would cost Redis 1,000s of reads a second for nothing."""
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
                take(await asyncio.wait_for(waiter.get(), wake - now))
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
