"""The aborter's half of :class:`~taskiq_abort.AbortMiddleware`: ``abort()``, ``abort_many()``.

A mixin, so that the middleware's module keeps to the taskiq hooks; it needs the middleware's
``backend``, ``broker`` and ``abort_timeout``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from taskiq_abort._aborter.algorithm import abort_task, abort_tasks_each, checked, raise_first
from taskiq_abort._aborter.cascade import abort_cascade
from taskiq_abort._aborter.where import matching, new_rule, rule_ttl
from taskiq_abort._wire.protocol import validate_rule_id
from taskiq_abort.backends.base import AbortBackend
from taskiq_abort.errors import AbortConfigError, TaskiqAbortError
from taskiq_abort.observability import events
from taskiq_abort.outcome import AbortOutcome, AbortRule, WhereOutcome

if TYPE_CHECKING:
    from taskiq import AsyncBroker, AsyncResultBackend


def find_aborter(broker: AsyncBroker) -> AbortCalls:
    """The broker's :class:`~taskiq_abort.AbortMiddleware` (the one ``AbortCalls`` there), or
    :class:`AbortConfigError` saying how to add it. Here, below the middleware's module, so
    that handles and observers can find it without importing the middleware."""
    for middleware in broker.middlewares:
        if isinstance(middleware, AbortCalls):
            return middleware
    raise AbortConfigError(
        f"{type(broker).__name__} has no AbortMiddleware: add it with "
        "broker.with_middlewares(AbortMiddleware(redis_url)) where the broker is created"
    )


class AbortCalls:
    """``abort()`` and ``abort_many()`` on the middleware (see :mod:`taskiq_abort.api`)."""

    backend: AbortBackend
    broker: AsyncBroker
    abort_timeout: float
    index_labels: tuple[str, ...]

    def _attached(self, what: str) -> AsyncBroker:
        """The broker, or :class:`AbortConfigError` for a middleware not added to one."""
        if self.broker is None:
            raise AbortConfigError(
                f"cannot abort {what}: this AbortMiddleware is not attached to a broker; "
                "add it with broker.with_middlewares(middleware)"
            )
        return self.broker

    async def abort(
        self,
        task_id: str,
        *,
        reason: str | None = None,
        wait: bool = True,
        timeout: float | None = None,
        grace: float | None = None,
        cascade: bool = False,
    ) -> AbortOutcome:
        """Abort ``task_id``; see :func:`taskiq_abort.abort`."""
        if cascade:
            return raise_first(await self.abort_each([task_id], reason=reason, wait=wait,
                timeout=timeout, grace=grace, cascade=True))[0]  # fmt: skip
        broker = self._attached(f"task {task_id}")
        started = time.perf_counter()
        try:
            outcome = await abort_task(
                self.backend,
                broker.result_backend,
                task_id,
                reason=reason,
                wait=wait,
                timeout=self.abort_timeout if timeout is None else timeout,
                grace=grace,
            )
        except Exception as exc:
            elapsed = time.perf_counter() - started
            await events.abort_answered(task_id, exc, elapsed, reason, self.broker)
            raise
        await events.abort_answered(task_id, outcome, outcome.elapsed, reason, self.broker)
        return outcome

    async def abort_many(
        self,
        task_ids: Iterable[str],
        *,
        reason: str | None = None,
        wait: bool = True,
        timeout: float | None = None,
        grace: float | None = None,
        cascade: bool = False,
    ) -> list[AbortOutcome]:
        """Abort many tasks at once; see :func:`taskiq_abort.abort_many`."""
        answers = await self.abort_each(
            task_ids, reason=reason, wait=wait, timeout=timeout, grace=grace, cascade=cascade
        )
        return raise_first(answers)

    async def abort_where(
        self,
        labels: Mapping[str, Any],
        *,
        task_name: str | None = None,
        reason: str | None = None,
        ttl: float | None = None,
        wait: bool = True,
        timeout: float | None = None,
        grace: float | None = None,
    ) -> WhereOutcome:
        """Abort by labels and keep refusing matching starts; see
        :func:`taskiq_abort.abort_where`."""
        rule = new_rule(labels, self.index_labels, task_name, reason)
        life = rule_ttl(ttl, self.backend)
        broker = self._attached(f"tasks labelled {rule.labels}")
        answers = await where_reported(
            self.backend,
            broker.result_backend,
            rule,
            life,
            wait=wait,
            timeout=self.abort_timeout if timeout is None else timeout,
            grace=grace,
            broker=broker,
        )
        return WhereOutcome(answers.rule, raise_first(answers.answers))

    async def cancel_rule(self, rule_id: str) -> bool:
        """Remove an abort rule early; see :func:`taskiq_abort.cancel_rule`."""
        return await self.backend.cancel_rule(validate_rule_id(rule_id))

    async def abort_rules(self) -> list[AbortRule]:
        """The abort rules in force; see :func:`taskiq_abort.abort_rules`."""
        return await self.backend.rules()

    async def abort_each(
        self,
        task_ids: Iterable[str],
        *,
        reason: str | None = None,
        wait: bool = True,
        timeout: float | None = None,
        grace: float | None = None,
        invalid_in_place: bool = False,
        cascade: bool = False,
    ) -> list[AbortOutcome | TaskiqAbortError]:
        """:meth:`abort_many` with each id's error in its place instead of raised (with
        ``invalid_in_place``, an invalid id's too); with ``cascade``, their descendants too
        (``_aborter/cascade.py``)."""
        ids = list(task_ids)
        broker = self._attached(f"{len(ids)} task(s)")
        return await abort_reported(
            self.backend,
            broker.result_backend,
            ids,
            reason=reason,
            wait=wait,
            timeout=self.abort_timeout if timeout is None else timeout,
            grace=grace,
            invalid_in_place=invalid_in_place,
            broker=broker,
            cascade=cascade,
        )


@dataclass(frozen=True)
class WhereAnswers:
    rule: AbortRule
    answers: list[AbortOutcome | TaskiqAbortError]


async def where_reported(
    backend: AbortBackend,
    result_backend: AsyncResultBackend[Any] | None,
    rule: AbortRule,
    ttl: float,
    *,
    wait: bool,
    timeout: float,
    grace: float | None,
    broker: AsyncBroker | None = None,
) -> WhereAnswers:
    """Record ``rule`` (first: see ``_aborter/where.py``), then abort the running tasks it
    matches, by id (the middleware's ``abort_where``, the CLI's ``--label``)."""
    checked(rule.reason, grace, timeout)  # every argument checked before the rule is recorded
    rule = await backend.add_rule(rule, ttl)
    ids = matching(await backend.workers(), rule)
    answers = await abort_reported(
        backend,
        result_backend,
        ids,
        reason=rule.reason,
        wait=wait,
        timeout=timeout,
        grace=grace,
        invalid_in_place=False,
        broker=broker,
    )
    return WhereAnswers(rule, answers)


async def abort_reported(
    backend: AbortBackend,
    result_backend: AsyncResultBackend[Any] | None,
    task_ids: list[str],
    *,
    reason: str | None,
    wait: bool,
    timeout: float,
    grace: float | None,
    invalid_in_place: bool,
    broker: AsyncBroker | None = None,
    cascade: bool = False,
) -> list[AbortOutcome | TaskiqAbortError]:
    """:func:`~taskiq_abort._aborter.algorithm.abort_tasks_each`, each id's answer reported to
    the observers once (the middleware's bulk abort, the CLI's); with ``cascade``, their
    descendants too (``_aborter/cascade.py``), every argument checked before a rule is
    recorded."""

    async def each(ids: list[str]) -> list[AbortOutcome | TaskiqAbortError]:
        started = time.perf_counter()
        answers = await abort_tasks_each(
            backend,
            result_backend,
            ids,
            reason=reason,
            wait=wait,
            timeout=timeout,
            grace=grace,
            invalid_in_place=invalid_in_place,
        )
        elapsed = time.perf_counter() - started
        for task_id, got in dict(zip(ids, answers, strict=True)).items():  # once per id
            await events.abort_answered(task_id, got, elapsed, reason, broker)
        return answers

    if not cascade:
        return await each(task_ids)
    checked(reason, grace, timeout)
    return await abort_cascade(backend, task_ids, reason, each)
