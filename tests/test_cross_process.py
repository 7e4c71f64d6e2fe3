"""Aborts across real ``taskiq worker`` processes, through a real Redis."""

from __future__ import annotations

import pytest

from taskiq_abort import AbortStatus, TaskAbortedError, abort
from tests.conftest import Events

pytestmark = pytest.mark.anyio


async def test_abort_running_task(client, worker_factory, events: Events) -> None:
    worker_factory().start()
    task = await client.find_task("sleeper").kiq(60)
    events.wait(task.task_id, "started")

    outcome = await task.abort(reason="user pressed stop")

    assert outcome.status is AbortStatus.ABORTED
    assert outcome.worker is not None
    events.wait(task.task_id, "finally")
    result = await task.wait_result(timeout=10)
    assert result.is_err
    assert isinstance(result.error, TaskAbortedError)
    assert result.error.task_id == task.task_id
    assert result.error.reason == "user pressed stop"


async def test_abort_queued_task_is_revoked(client, worker_factory, events: Events) -> None:
    task = await client.find_task("quick").kiq(21)  # no worker yet: it waits in the queue

    outcome = await abort(client, task.task_id, reason="changed my mind")

    assert outcome.status is AbortStatus.REVOKED
    result = await task.wait_result(timeout=10)  # stored by abort() itself, right away
    assert isinstance(result.error, TaskAbortedError)
    worker_factory().start()
    # The worker picks it up later and completes it at once without running the body.
    follow = await client.find_task("quick").kiq(1)
    assert (await follow.wait_result(timeout=30)).return_value == 2
    assert "started" not in events.all(task.task_id)
    assert isinstance((await task.wait_result(timeout=10)).error, TaskAbortedError)


async def test_abort_finished_task(client, worker_factory) -> None:
    worker_factory().start()
    task = await client.find_task("quick").kiq(5)
    assert (await task.wait_result(timeout=30)).return_value == 10

    outcome = await task.abort()

    assert outcome.status is AbortStatus.FINISHED
    assert (await task.wait_result(timeout=5)).return_value == 10
