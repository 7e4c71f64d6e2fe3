"""Checked by ``mypy --strict`` in .ci/run (never run): the public API keeps precise types."""

from __future__ import annotations

from taskiq import InMemoryBroker, TaskiqResult
from typing_extensions import assert_type

from taskiq_abort import (
    AbortableTask,
    AbortMiddleware,
    AbortOutcome,
    AbortStatus,
    abort,
    abort_many,
    abortable_task,
)

broker = InMemoryBroker().with_middlewares(AbortMiddleware())


@broker.task
async def crunch(n: int) -> int:
    return n


@abortable_task(broker, retry_on_error=False)
async def typed(n: int) -> str:
    return str(n)


async def main() -> None:
    handle = await typed.kiq(3)
    assert_type(handle, AbortableTask[str])
    assert_type(await handle.abort(), AbortOutcome)
    assert_type(await handle.wait_result(), TaskiqResult[str])

    task = AbortableTask.of(await crunch.kiq(1), broker)
    assert_type(task, AbortableTask[int])
    outcome = await task.abort(reason="typed", timeout=1.0)
    assert_type(outcome, AbortOutcome)
    assert_type(outcome.status, AbortStatus)
    result = await task.wait_result(timeout=1)
    assert_type(result, TaskiqResult[int])
    assert_type(await abort(broker, task.task_id), AbortOutcome)
    assert_type(await abort(broker, task), AbortOutcome)
    assert_type(await abort_many(broker, [task, task.task_id], reason="bulk"), list[AbortOutcome])
    middleware = AbortMiddleware()
    assert_type(await middleware.abort_many([task.task_id], timeout=2.0), list[AbortOutcome])
