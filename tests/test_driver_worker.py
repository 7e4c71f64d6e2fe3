"""How an abort reaches an async body, on real ``taskiq worker`` processes (tests/driver_app.py):
nothing of the abort outlives the body, a cancellation absorbed by an awaited child task is
delivered again, an async generator's clean-up runs, and every other middleware's hooks run
exactly once."""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator

import pytest
import redis
from taskiq import AsyncBroker

from taskiq_abort import AbortStatus, TaskAbortedError
from tests.app import events_key
from tests.conftest import Events
from tests.driver_app import make_driver_broker
from tests.faultkit import started

pytestmark = pytest.mark.anyio
APP = "tests.driver_app:broker"


@pytest.fixture(params=["edge", "level"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def driven(redis_url: str, prefix: str) -> AsyncIterator[AsyncBroker]:
    async with started(make_driver_broker(redis_url, prefix)) as broker:
        yield broker


def _start(worker_factory: type, mode: str = "edge") -> None:
    worker_factory(app=APP, env={"TASKIQ_ABORT_TEST_CANCEL_MODE": mode}).start()


async def _stopped(driven: AsyncBroker, events: Events, name: str) -> str:
    """Kick ``name``, abort it once it runs; it must end ``aborted``. Its task id."""
    task = await driven.find_task(name).kiq()
    events.wait(task.task_id, "started")
    outcome = await task.abort(timeout=10)
    assert outcome.status is AbortStatus.ABORTED, outcome
    assert isinstance((await task.wait_result(timeout=10)).error, TaskAbortedError)
    return task.task_id


async def test_an_abort_held_by_a_last_shield_leaves_nothing_pending(
    driven: AsyncBroker, worker_factory: type, events: Events, mode: str
) -> None:
    """The abort lands in the body's last step, a ``shield()``; the body then returns without
    another await. It finished: its own result is stored and confirmed, the dependency's
    teardown and the middlewares after it run undisturbed."""
    _start(worker_factory, mode)
    task = await driven.find_task("shield_last").kiq()
    events.wait(task.task_id, "in-shield")
    outcome = await task.abort(timeout=10)
    result = await task.wait_result(timeout=10)
    assert outcome.status is AbortStatus.FINISHED, outcome
    assert result.return_value == "committed", result
    events.wait(task.task_id, "teardown")


@pytest.mark.parametrize("how", ["return", "raise"])
async def test_a_cancellation_absorbed_by_an_awaited_child_is_delivered_again(
    driven: AsyncBroker, worker_factory: type, events: Events, mode: str, how: str
) -> None:
    _start(worker_factory, mode)
    task = await driven.find_task("absorbing_child").kiq(how)
    events.wait(task.task_id, "started")
    outcome = await task.abort(timeout=10)
    result = await task.wait_result(timeout=10)
    assert outcome.status is AbortStatus.ABORTED, outcome
    assert isinstance(result.error, TaskAbortedError), result
    seen = events.all(task.task_id)
    assert "child-absorbed" in seen and "last-line" not in seen, seen
    assert "caught-child-error" not in seen, seen  # stopped at that await, not after it


async def test_an_async_generators_clean_up_runs(
    driven: AsyncBroker, worker_factory: type, events: Events
) -> None:
    _start(worker_factory)
    task_id = await _stopped(driven, events, "agen_cleanup")
    assert "generator-cleaned-up" in events.all(task_id)


async def test_every_other_middlewares_hooks_run_exactly_once(
    driven: AsyncBroker, worker_factory: type, events: Events, rclient: redis.Redis, prefix: str
) -> None:
    """``[AbortMiddleware(), Recorder(), SimpleRetryMiddleware()]``: the recorder's startup
    runs once per worker process, its task hooks once per task, and the retry middleware,
    whose ``on_error`` runs before ours, does not retry the aborted task."""
    _start(worker_factory)
    task_id = await _stopped(driven, events, "recorded")
    hooks_key = events_key(prefix, f"hooks:{task_id}")
    hooks = collections.Counter(item.split()[0] for item in rclient.lrange(hooks_key, 0, -1))
    assert hooks == {"pre_execute": 1, "on_error": 1, "post_execute": 1, "post_save": 1}, hooks
    # A retry is kicked from on_error, before our confirmation: it would be in the stream.
    assert rclient.xlen(f"{prefix}:queue") == 1
    startups = collections.Counter(rclient.lrange(events_key(prefix, "startup"), 0, -1))
    assert startups and set(startups.values()) == {1}, startups
