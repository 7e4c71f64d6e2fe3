"""Documented promises that had no test of their own (issue 14), each checked against real
redis-server and ``taskiq worker`` processes the suite starts, so that each test fails when its
promise does not hold.

Time limits are lower bounds set by the option under test plus generous upper bounds (a
multiple of it, or the next larger failure mode), never tight wall-clock thresholds.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import pickle
import threading
import time
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

import anyio
import pytest
import redis
from taskiq import AsyncBroker, Context, InMemoryBroker, TaskiqDepends, TaskiqMessage

from taskiq_abort import (
    AbortMiddleware,
    AbortStatus,
    AbortToken,
    TaskAbortedError,
)
from tests.conftest import WorkerProcess

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def started(broker: AsyncBroker) -> AsyncIterator[AsyncBroker]:
    await broker.startup()
    try:
        yield broker
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(broker.shutdown(), 10)


def blpop(client: redis.Redis, key: str, timeout: float = 30.0) -> str:
    """BLPOP in slices below redis-py's default 5 s socket timeout; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        popped = client.blpop([key], timeout=min(left, 2.0))
        if popped is not None:
            return str(popped[1])
    raise TimeoutError(f"nothing pushed to {key} within {timeout} s")


# --- AbortToken under `taskiq worker --use-process-pool` ------------------------------------
@pytest.fixture
def pool_app(redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``tests/pool_app.py`` (module-level tasks, as the process pool needs) on this test's
    Redis and prefix; it reads them from the environment when imported."""
    monkeypatch.setenv("TASKIQ_ABORT_TEST_URL", redis_url)
    monkeypatch.setenv("TASKIQ_ABORT_TEST_PREFIX", prefix)
    import tests.pool_app

    return importlib.reload(tests.pool_app)


def _pool_worker(worker_factory: type[WorkerProcess]) -> WorkerProcess:
    worker = worker_factory(extra_args=("--use-process-pool",))
    worker.args[worker.args.index("tests.app:broker")] = "tests.pool_app:broker"
    return worker.start()


async def test_readme_token_pattern_runs_under_a_process_pool(
    pool_app: ModuleType, worker_factory: type[WorkerProcess], rclient: redis.Redis, prefix: str
) -> None:
    """A sync task taking an AbortToken used to fail on every run under the process pool
    (``cannot pickle '_asyncio.Task'``): taskiq pickles its arguments, token included. The
    child gets a detached token that is never aborted, so the task runs to its end."""
    _pool_worker(worker_factory)
    async with started(pool_app.broker):
        task = await pool_app.crunch.kiq(3)
        result = await task.wait_result(timeout=30)
        assert (result.return_value, result.error) == (3, None)

        # Aborted while it runs in the child: unconfirmed, and it returns its own result.
        release = f"{prefix}:release"
        task = await pool_app.crunch.kiq(2, release)
        blpop(rclient, f"{release}:started")
        outcome = await task.abort(reason="stop", timeout=0.5)
        assert outcome.status is AbortStatus.UNCONFIRMED
        rclient.rpush(release, "go", "go")
        result = await task.wait_result(timeout=30)
        assert (result.return_value, result.error) == (2, None)


async def test_a_token_pickles_to_a_detached_token() -> None:
    """Unpickled: same task id, never aborted; a copy in-process still follows the attempt."""
    import copy

    broker = InMemoryBroker().with_middlewares(AbortMiddleware())
    entered, release = threading.Event(), threading.Event()
    seen: dict[str, Any] = {}

    @broker.task
    def holder(token: AbortToken = TaskiqDepends()) -> str:
        seen["copy"], seen["pickled"] = copy.copy(token), pickle.loads(pickle.dumps(token))
        entered.set()
        release.wait(30)
        token.wait_sync(30)  # the abort reached the attempt
        seen["states"] = (
            token.is_aborted,
            seen["copy"].is_aborted,
            seen["pickled"].is_aborted,
            seen["pickled"].reason,
        )
        return seen["pickled"].task_id  # type: ignore[no-any-return]

    await broker.startup()
    try:
        task = await holder.kiq()
        await asyncio.to_thread(entered.wait, 30)
        assert (await task.abort(reason="why", wait=False)).status is AbortStatus.UNCONFIRMED
        release.set()
        result = await task.wait_result(timeout=10)
        assert result.return_value == task.task_id
        assert seen["states"] == (True, True, False, None)
    finally:
        await broker.shutdown()


# --- AbortToken outside a worker, and its reason inside one ---------------------------------
async def test_token_outside_a_worker_is_never_aborted_and_waits_out_its_timeout() -> None:
    """On a broker without AbortMiddleware: ``is_aborted`` False, ``reason`` None,
    ``wait_sync(t)`` returns False after ``t`` (not at once), ``await wait()`` does not return."""
    broker = InMemoryBroker()  # no AbortMiddleware: no attempt to report on
    wait_for = 0.3

    @broker.task
    def sync_probe(token: AbortToken = TaskiqDepends()) -> tuple[Any, ...]:
        token.raise_if_aborted()  # never raises
        begin = time.monotonic()
        waited = token.wait_sync(wait_for)
        return (token.is_aborted, token.reason, waited, time.monotonic() - begin)

    @broker.task
    async def async_probe(token: AbortToken = TaskiqDepends()) -> tuple[Any, ...]:
        with anyio.move_on_after(wait_for) as scope:
            await token.wait()
        return (token.is_aborted, token.reason, scope.cancelled_caught)

    await broker.startup()
    try:
        aborted, reason, waited, elapsed = (
            await (await sync_probe.kiq()).wait_result(timeout=10)
        ).return_value
        assert (aborted, reason, waited) == (False, None, False)
        assert elapsed >= wait_for - 0.05, elapsed  # it waited, it did not return at once
        result = await (await async_probe.kiq()).wait_result(timeout=10)
        assert tuple(result.return_value) == (False, None, True)  # wait() was still waiting
    finally:
        await broker.shutdown()

    # A token built from a plain message (a test calling a task body with one) is the same.
    token = AbortToken(Context(TaskiqMessage(task_id="t", task_name="n", labels={}, args=[],
                                             kwargs={}), broker))  # fmt: skip
    assert (token.task_id, token.is_aborted, token.reason) == ("t", False, None)
    assert token.wait_sync(0.01) is False


async def test_token_reason_and_wait_inside_a_worker() -> None:
    """``token.reason`` is the abort's reason; ``await token.wait()`` in a child task the body
    started returns on the abort (the signal to stop)."""
    broker = InMemoryBroker().with_middlewares(AbortMiddleware())
    seen: dict[str, Any] = {}
    entered = asyncio.Event()

    @broker.task
    async def parent(token: AbortToken = TaskiqDepends()) -> str:
        async def child() -> None:
            await token.wait()
            seen["child"] = (token.is_aborted, token.reason)

        watcher = asyncio.create_task(child())
        entered.set()
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.wait_for(watcher, 10)
        return "unreachable"

    await broker.startup()
    try:
        task = await parent.kiq()
        await asyncio.wait_for(entered.wait(), 10)
        assert (await task.abort(reason="enough")).status is AbortStatus.ABORTED
        result = await task.wait_result(timeout=10)
        assert isinstance(result.error, TaskAbortedError) and result.error.reason == "enough"
        assert seen["child"] == (True, "enough")
    finally:
        await broker.shutdown()
