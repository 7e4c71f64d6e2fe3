"""Task handles with ``.abort()``: what ``.kiq()`` returns on a broker with AbortMiddleware.

TaskIQ has no hook for the handle class, so we take the one it has for the decorated-task class
(``broker.decorator_class``) and return our kicker from it, which returns our handle.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from types import CoroutineType
from typing import Any, ParamSpec, TypeVar, overload

from taskiq import AsyncBroker, AsyncTaskiqDecoratedTask, TaskiqResult
from taskiq.abc.result_backend import AsyncResultBackend
from taskiq.compat import parse_obj_as
from taskiq.kicker import AsyncKicker
from taskiq.task import AsyncTaskiqTask

from taskiq_abort._aborter.calls import find_aborter
from taskiq_abort.outcome import AbortOutcome

logger = logging.getLogger("taskiq.task")  # where taskiq's own handle logs
_T = TypeVar("_T")
_P = ParamSpec("_P")
_R = TypeVar("_R")


class AbortableTask(AsyncTaskiqTask[_R]):
    """An ``AsyncTaskiqTask`` that can also ``abort()`` its task.

    ``.kiq()`` returns one on any broker with ``AbortMiddleware``. Type checkers see
    ``broker.task``'s declared ``AsyncTaskiqTask``; for them, turn a handle into this class
    with ``AbortableTask.of(handle, broker)`` (the result type is kept).
    """

    def __init__(
        self,
        task_id: str,
        result_backend: AsyncResultBackend[_R],
        return_type: type[_R] | None = None,
        *,
        broker: AsyncBroker,
    ) -> None:
        super().__init__(task_id, result_backend, return_type)
        self.broker = broker

    @classmethod
    def of(cls, task: AsyncTaskiqTask[_T], broker: AsyncBroker) -> AbortableTask[_T]:
        """The same task as an ``AbortableTask`` (a no-op for one already)."""
        if isinstance(task, AbortableTask):
            return task
        return AbortableTask(task.task_id, task.result_backend, task.return_type, broker=broker)

    async def get_result(self, with_logs: bool = False) -> TaskiqResult[_R]:
        """As ``AsyncTaskiqTask.get_result``, without taskiq's spurious "Cannot parse return
        type" warning for an error result (an aborted task has no return value to parse)."""
        return_type, self.return_type = self.return_type, None
        try:
            result = await super().get_result(with_logs)
        finally:
            self.return_type = return_type
        if return_type is not None and not result.is_err:
            try:
                result.return_value = parse_obj_as(return_type, result.return_value)
            except ValueError:
                logger.warning("Cannot parse return type into %s", return_type)
        return result

    async def abort(
        self,
        *,
        reason: str | None = None,
        wait: bool = True,
        timeout: float | None = None,
        grace: float | None = None,
        cascade: bool = False,
    ) -> AbortOutcome:
        """Abort this task; see :func:`taskiq_abort.abort`."""
        return await find_aborter(self.broker).abort(
            self.task_id, reason=reason, wait=wait, timeout=timeout, grace=grace, cascade=cascade
        )

    def __repr__(self) -> str:
        return f"AbortableTask({self.task_id!r})"


class AbortableKicker(AsyncKicker[_P, _R]):
    """An ``AsyncKicker`` whose ``kiq()`` returns an :class:`AbortableTask`."""

    @overload
    async def kiq(
        self: AbortableKicker[_P, CoroutineType[Any, Any, _T]],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> AbortableTask[_T]: ...

    @overload
    async def kiq(
        self: AbortableKicker[_P, Coroutine[Any, Any, _T]],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> AbortableTask[_T]: ...

    @overload
    async def kiq(
        self: AbortableKicker[_P, _R], *args: _P.args, **kwargs: _P.kwargs
    ) -> AbortableTask[_R]: ...

    async def kiq(self, *args: Any, **kwargs: Any) -> Any:
        task = await super().kiq(*args, **kwargs)
        return AbortableTask.of(task, self.broker)


class AbortableDecoratedTask(AsyncTaskiqDecoratedTask[_P, _R]):
    """The decorated-task class installed on brokers with ``AbortMiddleware``."""

    @overload
    async def kiq(
        self: AbortableDecoratedTask[_P, CoroutineType[Any, Any, _T]],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> AbortableTask[_T]: ...

    @overload
    async def kiq(
        self: AbortableDecoratedTask[_P, Coroutine[Any, Any, _T]],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> AbortableTask[_T]: ...

    @overload
    async def kiq(
        self: AbortableDecoratedTask[_P, _R], *args: _P.args, **kwargs: _P.kwargs
    ) -> AbortableTask[_R]: ...

    async def kiq(self, *args: Any, **kwargs: Any) -> Any:
        return await self.kicker().kiq(*args, **kwargs)

    def kicker(self) -> AbortableKicker[_P, _R]:
        base = super().kicker()
        kicker: AbortableKicker[_P, _R] = AbortableKicker(
            task_name=base.task_name,
            broker=base.broker,
            labels=base.labels,
            return_type=base.return_type,
        )
        return kicker


def install_abortable_handles(broker: AsyncBroker) -> None:
    """Make ``broker``'s tasks, those decorated already and those to come, abortable."""
    current = broker.decorator_class
    if not issubclass(current, AbortableDecoratedTask):
        if current is AsyncTaskiqDecoratedTask:
            broker.decorator_class = AbortableDecoratedTask
        else:  # another add-on has its own class: keep it, add ours on top
            mixed: Any = type(f"Abortable{current.__name__}", (AbortableDecoratedTask, current), {})
            broker.decorator_class = mixed
    for task in broker.local_task_registry.values():
        if type(task) is AsyncTaskiqDecoratedTask:
            task.__class__ = AbortableDecoratedTask


def abortable_task(
    broker: AsyncBroker, task_name: str | None = None, **labels: Any
) -> Callable[[Callable[_P, _R]], AbortableDecoratedTask[_P, _R]]:
    """``@broker.task(...)``, typed so that type checkers know ``.kiq()``'s handle has
    ``.abort()`` (taskiq declares ``broker.task`` as returning its plain classes)::

        @abortable_task(broker, timeout=60)
        async def crunch(n: int) -> int: ...

        task = await crunch.kiq(42)   # AbortableTask[int]
        await task.abort()            # type-checks; wait_result() is TaskiqResult[int]
    """

    def decorate(func: Callable[_P, _R]) -> AbortableDecoratedTask[_P, _R]:
        task: Any = broker.task(task_name, **labels)(func)
        if not isinstance(task, AbortableDecoratedTask):  # AbortMiddleware not added yet
            task.__class__ = AbortableDecoratedTask
        return task  # type: ignore[no-any-return]

    return decorate
