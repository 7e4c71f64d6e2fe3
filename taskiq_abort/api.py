"""``abort(broker, task_id)`` and ``abort_many(broker, task_ids)``: abort tasks by id, from any
process that has the broker."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from taskiq import AsyncBroker
from taskiq.task import AsyncTaskiqTask

from taskiq_abort._aborter.calls import find_aborter
from taskiq_abort.middleware import AbortMiddleware
from taskiq_abort.outcome import AbortOutcome


def find_middleware(broker: AsyncBroker) -> AbortMiddleware:
    """The broker's :class:`AbortMiddleware`, or :class:`AbortConfigError` saying how to add it."""
    middleware = find_aborter(broker)
    assert isinstance(middleware, AbortMiddleware)  # the only class with the aborter's calls
    return middleware


async def abort(
    broker: AsyncBroker,
    task: str | AsyncTaskiqTask[Any],
    *,
    reason: str | None = None,
    wait: bool = True,
    timeout: float | None = None,
    grace: float | None = None,
) -> AbortOutcome:
    """Abort a task, queued or running, on whichever worker holds it.

    :param broker: the application's broker (with :class:`AbortMiddleware`).
    :param task: a task id, or the handle ``.kiq()`` returned.
    :param reason: stored in the task's ``TaskAbortedError``.
    :param wait: wait for the worker's confirmation (default); else return once the request
        is recorded and sent to its worker (``unconfirmed`` when a worker holds the task).
    :param timeout: seconds to wait for the confirmation (default: the middleware's
        ``abort_timeout``, 5 s).
    :param grace: seconds a running task gets to stop on its own before it is cancelled: its
        ``AbortToken`` is set at once (``is_aborted``, ``await token.wait()``), and the body is
        cancelled only if it is still running when the grace period ends (then
        ``outcome.forced`` is true). A task that stops by raising (through the token, say) is
        ``aborted``; one that returns its result within the grace period is ``finished``. The
        worker enforces the grace period even after ``timeout`` has run out here.
    :returns: an :class:`AbortOutcome` whose ``status`` is ``aborted`` (it was running and
        stopped), ``revoked`` (it had not started and never will), ``finished`` (it already had
        a result; nothing changed) or ``unconfirmed`` (its worker did not confirm in time).
    :raises InvalidTaskIdError: for an id that cannot be a task id; nothing is sent.
    :raises AbortBackendUnavailableError: Redis could not be reached (in bounded time).
    :raises AbortConfigError: the broker has no ``AbortMiddleware``.
    """
    task_id = task.task_id if isinstance(task, AsyncTaskiqTask) else task
    return await find_middleware(broker).abort(
        task_id, reason=reason, wait=wait, timeout=timeout, grace=grace
    )


async def abort_many(
    broker: AsyncBroker,
    tasks: Iterable[str | AsyncTaskiqTask[Any]],
    *,
    reason: str | None = None,
    wait: bool = True,
    timeout: float | None = None,
    grace: float | None = None,
) -> list[AbortOutcome]:
    """Abort many tasks at once: what :func:`abort` does for each, at a fraction of the cost.

    The requests are recorded in one Redis call per 1,000 ids, each worker holding some of the
    tasks gets one message listing them, and confirms them in batches; ids that nobody runs
    are revoked (their results stored) meanwhile.

    :param tasks: task ids, or the handles ``.kiq()`` returned, in any mix. An id given twice
        is aborted once, and its outcome given at each of its positions.
    :param reason: as for :func:`abort`, the same for every task.
    :param wait: as for :func:`abort`.
    :param grace: as for :func:`abort`, the same for every task.
    :param timeout: seconds to wait for each task's confirmation, from when its request was
        sent (default: the middleware's ``abort_timeout``, 5 s).
    :returns: one :class:`AbortOutcome` per item of ``tasks``, in the same order.
    :raises InvalidTaskIdError: if any id cannot be a task id; nothing is sent.
    :raises AbortBackendUnavailableError: Redis could not be reached (in bounded time). It is
        raised once every other id has been dealt with; requests recorded before it stand.
    :raises AbortConfigError: the broker has no ``AbortMiddleware``.
    """
    ids = [task.task_id if isinstance(task, AsyncTaskiqTask) else task for task in tasks]
    return await find_middleware(broker).abort_many(
        ids, reason=reason, wait=wait, timeout=timeout, grace=grace
    )
