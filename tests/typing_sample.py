"""Checked by ``mypy --strict`` in .ci/run (never run): the public API keeps precise types."""

from __future__ import annotations

from taskiq import InMemoryBroker, TaskiqResult
from typing_extensions import assert_type

from taskiq_abort import AbortableTask, AbortMiddleware, AbortOutcome, AbortStatus, abort

broker = InMemoryBroker().with_middlewares(AbortMiddleware())


@broker.task
async def crunch(n: int) -> int:
    return n


async def main() -> None:
    task = AbortableTask.of(await crunch.kiq(1), broker)
    assert_type(task, AbortableTask[int])
    outcome = await task.abort(reason="typed", timeout=1.0)
    assert_type(outcome, AbortOutcome)
    assert_type(outcome.status, AbortStatus)
    result = await task.wait_result(timeout=1)
    assert_type(result, TaskiqResult[int])
    assert_type(await abort(broker, task.task_id), AbortOutcome)
    assert_type(await abort(broker, task), AbortOutcome)
