"""``abort(broker, task_id)`` and ``abort_many(broker, task_ids)``: abort tasks by id, from any
process that has the broker; ``abort_where(broker, labels=...)``: by labels, with a rule that
refuses matching tasks at their start."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from taskiq import AsyncBroker
from taskiq.task import AsyncTaskiqTask

from taskiq_abort._aborter.calls import find_aborter
from taskiq_abort.middleware import AbortMiddleware
from taskiq_abort.outcome import AbortOutcome, AbortRule, WhereOutcome


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
    cascade: bool = False,
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
    :param cascade: also abort every task it fanned out (kicked from inside it, and so on):
        the running ones wherever they run, the queued ones (and any its body kicks while it
        cleans up) refused at their start by abort rules on its id (which live
        ``request_ttl``). ``outcome.descendants`` counts the running ones stopped. Off by
        default. See README, "Abort by labels".
    :returns: an :class:`AbortOutcome` whose ``status`` is ``aborted`` (it was running and
        stopped), ``revoked`` (it had not started and never will), ``finished`` (it already had
        a result; nothing changed) or ``unconfirmed`` (its worker did not confirm in time).
    :raises InvalidTaskIdError: for an id that cannot be a task id; nothing is sent.
    :raises AbortBackendUnavailableError: Redis could not be reached (in bounded time).
    :raises AbortConfigError: the broker has no ``AbortMiddleware``.
    """
    task_id = task.task_id if isinstance(task, AsyncTaskiqTask) else task
    return await find_middleware(broker).abort(
        task_id, reason=reason, wait=wait, timeout=timeout, grace=grace, cascade=cascade
    )


async def abort_many(
    broker: AsyncBroker,
    tasks: Iterable[str | AsyncTaskiqTask[Any]],
    *,
    reason: str | None = None,
    wait: bool = True,
    timeout: float | None = None,
    grace: float | None = None,
    cascade: bool = False,
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
    :param cascade: as for :func:`abort`, for every task.
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
        ids, reason=reason, wait=wait, timeout=timeout, grace=grace, cascade=cascade
    )


async def abort_where(
    broker: AsyncBroker,
    labels: Mapping[str, Any],
    *,
    task_name: str | None = None,
    reason: str | None = None,
    ttl: float | None = None,
    wait: bool = True,
    timeout: float | None = None,
    grace: float | None = None,
) -> WhereOutcome:
    """Abort every task whose labels match, running now or starting until the rule expires.

    Records an abort rule (durably, like an abort request), then aborts the matching tasks
    running on any worker, by id, as :func:`abort_many` does. Until the rule expires (or
    :func:`cancel_rule`), every matching task that starts (queued now, or kicked later) is
    refused at its start, atomically, as a revoked task is: its body never runs and its result
    is ``TaskAbortedError``, whose reason names the rule.

    Only labels declared with ``AbortMiddleware(index_labels=...)`` can be matched, on the
    workers (which write them into the registry and check them at each start) and here. Values
    are compared as text (``str()``).

    :param labels: ``{name: value}``; a task matches when it carries every pair.
    :param task_name: also require this task name.
    :param reason: stored in each task's ``TaskAbortedError``, followed by the rule's id.
    :param ttl: seconds the rule refuses starts (default: the middleware's ``request_ttl``).
    :param wait: as for :func:`abort`, for the running tasks.
    :param timeout: as for :func:`abort_many`.
    :param grace: as for :func:`abort`, for the running tasks.
    :returns: a :class:`WhereOutcome`: the rule (its id and expiry) and one
        :class:`AbortOutcome` per running task found.
    :raises AbortConfigError: a label not declared in ``index_labels`` (nothing is recorded),
        or a backend without rules.
    :raises AbortBackendUnavailableError: Redis could not be reached (in bounded time); a rule
        already recorded stands.
    """
    return await find_middleware(broker).abort_where(
        labels,
        task_name=task_name,
        reason=reason,
        ttl=ttl,
        wait=wait,
        timeout=timeout,
        grace=grace,
    )


async def cancel_rule(broker: AsyncBroker, rule: str | AbortRule | WhereOutcome) -> bool:
    """Remove an abort rule before it expires: matching tasks that start from now on run.
    ``False`` when there was no such rule (expired, or removed already)."""
    if isinstance(rule, WhereOutcome):
        rule = rule.rule
    rule_id = rule.rule_id if isinstance(rule, AbortRule) else rule
    return await find_middleware(broker).cancel_rule(rule_id)


async def abort_rules(broker: AsyncBroker) -> list[AbortRule]:
    """The abort rules in force (:func:`abort_where`), with their labels and expiry."""
    return await find_middleware(broker).abort_rules()
