"""Issue 12: an abort stops the body even when code it awaits swallows the cancellation.

CPython 3.10/3.11's ``asyncio.wait_for`` drops a cancellation that lands as the awaited
operation completes, and redis-py sends every command through it: a task cancelled during
``await client.set(...)`` on a shared client could run on to its end. These tests drive real
``taskiq worker`` processes and count what the bodies did, in Redis.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import sys

import pytest
import redis
from taskiq import InMemoryBroker

from taskiq_abort import AbortMiddleware, AbortStatus, TaskAbortedError
from taskiq_abort._wire.keys import KeySpace
from tests.app import make_broker
from tests.conftest import Events

ROUNDS = int(os.environ.get("TASKIQ_ABORT_SWALLOW_ROUNDS", "500"))


@pytest.mark.anyio
@pytest.mark.parametrize(("mode", "rounds"), [("edge", ROUNDS), ("level", 100)])
async def test_kick_then_abort_never_lets_a_body_reach_its_end(
    redis_url: str,
    prefix: str,
    rclient: redis.Redis,
    worker_factory: type,
    mode: str,
    rounds: int,
) -> None:
    """Issue 12's reproduction, ``rounds`` times: kick the marker task, then abort it.

    The swallow needs the cancellation to land as the body's first redis-py command completes,
    so the delay between kick and abort follows the task's start on this machine, whatever its
    speed: longer after a round that found the task still queued (revoked), shorter after one
    whose body was already past its first command (the ``started`` mark exists).
    """
    worker_factory(broker="list", env={"TASKIQ_ABORT_TEST_CANCEL_MODE": mode}).start()
    client = make_broker(redis_url, prefix, "list")
    await client.startup()
    statuses: collections.Counter[str] = collections.Counter()
    slowest, delay, rng = 0.0, 0.0, random.Random(12)
    try:
        marker = client.find_task("marker")
        for i in range(rounds):
            handle = await marker.kiq(f"r{i}")
            await asyncio.sleep(delay * rng.uniform(0.5, 1.5))
            outcome = await handle.abort(timeout=5)
            statuses[outcome.status.value] += 1
            slowest = max(slowest, outcome.elapsed)
            result = await handle.wait_result(timeout=30)
            assert isinstance(result.error, TaskAbortedError), (i, outcome, result)
            if outcome.status is AbortStatus.REVOKED:
                delay += 0.0002
            elif rclient.exists(f"{prefix}:started:r{i}"):
                delay = max(0.0, delay - 0.0002)
        probe = await client.find_task("introspect").kiq()
        redelivered = (await probe.wait_result(timeout=30)).return_value["redeliveries"]
    finally:
        await client.shutdown()

    def count(kind: str) -> int:
        return sum(1 for _ in rclient.scan_iter(f"{prefix}:{kind}:*", count=1000))

    started, done, cleanup = count("started"), count("done"), count("cleanup")
    print(
        f"\n{mode}: {rounds} rounds {dict(statuses)}; bodies started {started}, reached their "
        f"end {done}, cleaned up {cleanup}; swallowed aborts delivered again {redelivered}; "
        f"slowest abort {slowest:.3f} s; final delay {delay * 1000:.1f} ms"
    )
    assert done == 0, f"{done} of {rounds} aborted bodies ran to their end"
    assert statuses["aborted"] + statuses["revoked"] == rounds, statuses
    assert statuses["aborted"] > 0, statuses  # the race with the first await did happen
    if mode == "edge":
        assert cleanup >= started, (started, cleanup)  # clean-up in ``finally`` may await
        if sys.version_info < (3, 12):  # 3.12's wait_for no longer drops a cancellation
            assert redelivered > 0, "no abort landed in a swallowing await: the test proved nothing"


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["edge", "level"])
async def test_a_body_that_catches_the_abort_once_stops_at_its_next_await(
    redis_url: str, prefix: str, worker_factory: type, events: Events, mode: str
) -> None:
    worker_factory(env={"TASKIQ_ABORT_TEST_CANCEL_MODE": mode}).start()
    client = make_broker(redis_url, prefix)
    await client.startup()
    try:
        task = await client.find_task("stubborn").kiq()
        events.wait(task.task_id, "started")
        outcome = await task.abort(reason="stop it")
        assert outcome.status is AbortStatus.ABORTED
        result = await task.wait_result(timeout=10)
    finally:
        await client.shutdown()
    assert isinstance(result.error, TaskAbortedError)
    seen = events.all(task.task_id)
    assert "ran-on" not in seen, seen
    if mode == "edge":
        assert "swallowed" in seen, seen


def _abort_on_a_fresh_loop(broker: InMemoryBroker, run: int) -> tuple[str, object]:
    """One ``asyncio.run``: kick a task, abort it once it runs; the loop ends afterwards."""
    started = asyncio.Event  # created inside the loop below

    async def one() -> tuple[str, object]:
        event = started()
        crunch = broker.find_task(f"crunch-{run}") or _define(broker, run, event)
        task = await crunch.kiq()
        await event.wait()
        outcome = await task.abort(timeout=5.0)
        result = await task.wait_result(timeout=10)
        return outcome.status.value, result.error

    return asyncio.run(one())


def _define(broker: InMemoryBroker, run: int, event: asyncio.Event):  # type: ignore[no-untyped-def]
    @broker.task(task_name=f"crunch-{run}")
    async def crunch() -> str:
        event.set()
        await asyncio.sleep(30)
        return "ran to the end"

    return crunch


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_a_broker_used_from_one_event_loop_after_another(
    backend: str, redis_url: str, prefix: str
) -> None:
    """``asyncio.run`` per test, a loop per pytest test: the worker side follows the loop."""
    mw = AbortMiddleware() if backend == "memory" else AbortMiddleware(redis_url, prefix=prefix)
    broker = InMemoryBroker().with_middlewares(mw)  # never started nor shut down: as in tests
    for run in range(3):
        status, error = _abort_on_a_fresh_loop(broker, run)
        assert status == "aborted", (run, status, error)
        assert isinstance(error, TaskAbortedError), (run, error)
    if backend == "redis":  # the ended loops' worker registrations were taken out
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        try:
            assert client.zcard(KeySpace(prefix).workers) <= 1
        finally:
            client.close()
