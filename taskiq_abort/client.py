"""The aborter half: record, tell the holders, then wait for them or settle the result ourselves."""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Any

from taskiq_abort.backends.base import AbortBackend, ReplyWaiter
from taskiq_abort.errors import AbortBackendUnavailableError, TaskAbortedError, TaskiqAbortError
from taskiq_abort.outcome import AbortOutcome, AbortStatus
from taskiq_abort.protocol import check_grace, clean_reason, validate_task_id

if TYPE_CHECKING:  # taskiq is imported where a result is stored: `taskiq-abort ID` starts fast
    from taskiq import AsyncResultBackend, TaskiqResult
    from taskiq.abc.result_backend import AsyncResultBackend as _Backend


def aborted_result(task_id: str, reason: str | None) -> TaskiqResult[Any]:
    """The result stored for an aborted task."""
    from taskiq import TaskiqResult

    return TaskiqResult(
        is_err=True,
        return_value=None,
        execution_time=0.0,
        error=TaskAbortedError(task_id, reason),
        labels={},
    )


def _has_results(backend: _Backend[Any] | None) -> bool:
    if backend is None:
        return False
    from taskiq.result_backends.dummy import DummyResultBackend

    return not isinstance(backend, DummyResultBackend)


async def _replies(
    backend: AbortBackend,
    task_id: str,
    waiter: ReplyWaiter,
    holders: tuple[str, ...],
    deadline: float,
) -> tuple[str, str | None, bool] | None:
    """Wait until every holder replied: ``(status, worker, forced)``, or ``None`` if one did
    not in time. ``aborted`` wins over the others (a task delivered to several workers is
    aborted if any copy was), then ``finished``; ``unknown`` only when no holder says more.
    ``forced``: some copy had to be cancelled when its grace period ran out."""
    pending = set(holders)
    said: dict[str, str | None] = {}
    forced = False
    while pending:
        reply = await backend.wait_reply(task_id, waiter, deadline - time.perf_counter())
        if reply is None:
            return None
        said.setdefault(reply.status, reply.worker or holders[0])
        forced = forced or reply.forced
        if not reply.worker:  # read from the durable record: the word for the whole task
            break
        pending.discard(reply.worker)
    for status in ("aborted", "finished", "unknown"):
        if status in said:
            return status, said[status], forced and status == "aborted"
    return None


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
        by = f"{socket.gethostname()}:{os.getpid()}"
        found = await backend.request(task_id, reason, by, grace_s)
        reason = found.reason  # the first request's reason stands, as in TaskAbortedError
        if found.outcome in ("aborted", "revoked") or (
            found.outcome == "finished" and found.holder is None
        ):  # aborting twice is harmless, and says the same again
            record = await backend.get_request(task_id)
            if found.outcome == "finished":
                await backend.clear_request(task_id)
            elif found.outcome == "revoked":  # said again only once it would survive a failover
                await backend.set_outcome(task_id, "revoked")
            worker, forced = (record.worker, record.forced) if record else (None, False)
            return done(AbortStatus(found.outcome), worker, forced)
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
        # Nobody runs it. Any worker that picks it up from now on sees the request and stops.
        if _has_results(result_backend):
            assert result_backend is not None
            try:
                # is_result_ready, never get_result: with keep_results=False a read consumes it.
                if await result_backend.is_result_ready(task_id):
                    # Either it finished before our request, or a worker started it just
                    # after and found the request: the record tells which.
                    record = await backend.settle_finished(task_id)
                    if record is not None:
                        return done(AbortStatus.REVOKED, record.worker)
                    return done(AbortStatus.FINISHED)
                await result_backend.set_result(task_id, aborted_result(task_id, reason))
            except TaskiqAbortError:
                raise
            except Exception as exc:
                raise AbortBackendUnavailableError(
                    f"task {task_id} is revoked, but its result backend failed ({exc!r}): "
                    "callers waiting on its result will wait until a worker picks it up"
                ) from exc
        await backend.set_outcome(task_id, "revoked")
        return done(AbortStatus.REVOKED)
    finally:
        if waiter is not None:
            backend.discard_reply(task_id, waiter)
