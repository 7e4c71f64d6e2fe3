"""Every abort status and task kind, across real worker processes and a real Redis."""

from __future__ import annotations

import asyncio
import collections
import json
import random
import subprocess
import sys
import time
import uuid

import pytest
import redis

from taskiq_abort import (
    AbortBackendUnavailableError,
    AbortMiddleware,
    AbortStatus,
    TaskAbortedError,
    abort,
)
from taskiq_abort._wire.keys import KeySpace
from tests.app import make_broker
from tests.conftest import ROOT, Events
from tests.support.redis_servers import free_port

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["stream", "list"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def kind_client(redis_url: str, prefix: str, kind: str):
    broker = make_broker(redis_url, prefix, kind)
    await broker.startup()
    yield broker
    await broker.shutdown()


async def _running(client, events: Events, name: str, *args: object):
    task = await client.find_task(name).kiq(*args)
    events.wait(task.task_id, "started")
    return task


async def test_running_task_aborted_on_both_brokers(
    kind_client, worker_factory, events, kind
) -> None:
    worker_factory(broker=kind).start()
    task = await _running(kind_client, events, "sleeper", 60)
    outcome = await task.abort(reason="stop")
    assert (outcome.status, outcome.reason) == (AbortStatus.ABORTED, "stop")
    assert events.all(task.task_id)[-1] == "finally"
    result = await task.wait_result(timeout=10)
    assert isinstance(result.error, TaskAbortedError)


async def test_abort_twice_is_harmless(kind_client, worker_factory, events, kind) -> None:
    worker_factory(broker=kind).start()
    task = await _running(kind_client, events, "sleeper", 60)
    first, concurrent = await asyncio.gather(task.abort(), task.abort())
    second = await task.abort()
    assert first.status is AbortStatus.ABORTED
    assert concurrent.status is AbortStatus.ABORTED
    assert second.status is AbortStatus.ABORTED
    assert second.worker == first.worker


async def test_revoke_twice_and_wait_false(kind_client, kind) -> None:
    task = await kind_client.find_task("quick").kiq(3)
    assert (await task.abort(wait=False)).status is AbortStatus.REVOKED
    assert (await task.abort()).status is AbortStatus.REVOKED


async def test_wait_false_on_running_task_is_unconfirmed(client, worker_factory, events) -> None:
    worker_factory().start()
    task = await _running(client, events, "sleeper", 60)
    outcome = await task.abort(wait=False)
    assert outcome.status is AbortStatus.UNCONFIRMED
    assert outcome.worker is not None
    result = await task.wait_result(timeout=10)  # the abort still happens
    assert isinstance(result.error, TaskAbortedError)


async def test_task_that_swallows_cancellation_still_ends_aborted(
    client, worker_factory, events
) -> None:
    worker_factory().start()
    task = await _running(client, events, "swallower")
    assert (await task.abort()).status is AbortStatus.ABORTED
    assert "swallowed" in events.all(task.task_id)
    result = await task.wait_result(timeout=10)
    assert isinstance(result.error, TaskAbortedError)


async def test_cancellation_reaches_a_task_group(client, worker_factory, events) -> None:
    worker_factory().start()
    task = await _running(client, events, "group_sleeper")
    assert (await task.abort()).status is AbortStatus.ABORTED
    assert {"child-finally-1", "child-finally-2"} <= set(events.all(task.task_id))
    assert isinstance((await task.wait_result(timeout=10)).error, TaskAbortedError)


async def test_shield_lets_the_critical_step_finish(client, worker_factory, events) -> None:
    worker_factory().start()
    task = await client.find_task("shielded").kiq()
    events.wait(task.task_id, "in-shield")
    outcome = await task.abort()  # lands while the "commit" runs
    assert outcome.status is AbortStatus.ABORTED
    seen = events.all(task.task_id)
    assert "committed" in seen
    assert "after-shield" not in seen
    assert isinstance((await task.wait_result(timeout=10)).error, TaskAbortedError)


async def test_sync_task_that_checks_its_token_is_aborted(client, worker_factory, events) -> None:
    worker_factory().start()
    task = await _running(client, events, "sync_checker")
    assert (await task.abort(reason="sync")).status is AbortStatus.ABORTED
    result = await task.wait_result(timeout=10)
    assert isinstance(result.error, TaskAbortedError)
    assert result.error.reason == "sync"


async def test_sync_task_that_ignores_its_token_is_unconfirmed(
    client, worker_factory, events, rclient: redis.Redis
) -> None:
    worker_factory().start()
    release = f"release-{uuid.uuid4().hex}"
    task = await _running(client, events, "sync_ignorer", release)
    outcome = await task.abort(timeout=0.5)
    assert outcome.status is AbortStatus.UNCONFIRMED
    assert outcome.worker is not None
    rclient.rpush(release, "go")
    result = await task.wait_result(timeout=10)
    assert result.return_value == "ignored the abort"  # threads cannot be interrupted


@pytest.mark.parametrize("abort_first", [False, True], ids=["abort-last", "abort-first"])
async def test_aborted_task_is_never_retried(
    redis_url, prefix, worker_factory, events, rclient, abort_first
) -> None:
    broker = make_broker(redis_url, prefix, "stream", abort_first=abort_first)
    await broker.startup()
    try:
        env = {"TASKIQ_ABORT_TEST_ABORT_FIRST": "1" if abort_first else "0"}
        worker_factory(env=env).start()
        task = await _running(broker, events, "flaky")
        assert (await task.abort()).status is AbortStatus.ABORTED
        assert isinstance((await task.wait_result(timeout=10)).error, TaskAbortedError)
        # A retry would have kicked the same task id again onto the stream.
        assert rclient.xlen(f"{prefix}:queue") == 1
        assert events.all(task.task_id).count("started") == 1
    finally:
        await broker.shutdown()


async def test_several_worker_processes(client, worker_factory, events) -> None:
    worker = worker_factory(workers=2).start()
    assert len(worker.live_workers()) == 2
    tasks = [await client.find_task("sleeper").kiq(60) for _ in range(6)]
    for task in tasks:
        events.wait(task.task_id, "started")
    outcomes = await asyncio.gather(*(task.abort() for task in tasks))
    assert {o.status for o in outcomes} == {AbortStatus.ABORTED}
    assert {o.worker for o in outcomes} <= set(worker.live_workers())
    for task in tasks:
        assert isinstance((await task.wait_result(timeout=10)).error, TaskAbortedError)


async def test_start_race_hammer(client, worker_factory, events) -> None:
    """Aborts fired while tasks start: every outcome agrees with the stored result.

    Both sides of the race must happen, whatever this machine's speed: the delay between kick
    and abort follows the worker (longer after a round that found the task still queued,
    shorter after one that found it running), with jitter around it.
    """
    worker_factory().start()
    rng = random.Random(183)
    delay = 0.0

    async def abort_soon(task, wait: float):
        await asyncio.sleep(wait)
        return await task.abort()

    tasks, outcomes = [], []
    seen: collections.Counter[AbortStatus] = collections.Counter()
    waves = 0
    # 10 tasks starting at once per wave, their aborts spread around ``delay``; at least 20
    # waves, and more (up to 100) until both sides of the race have happened.
    while waves < 20 or not (seen[AbortStatus.REVOKED] and seen[AbortStatus.ABORTED]):
        if waves == 100:
            break
        waves += 1
        kicked = [await client.find_task("sleeper").kiq(0.002 * (i % 5)) for i in range(10)]
        done = await asyncio.gather(*(abort_soon(t, delay * rng.uniform(0.0, 2.0)) for t in kicked))
        tasks += kicked
        outcomes += done
        seen.update(o.status for o in done)
        revoked = sum(o.status is AbortStatus.REVOKED for o in done)
        if revoked > 5:  # mostly still queued: abort later (doubling, from 0.5 ms)
            delay = max(0.0005, delay * 2)
        elif revoked < 5:  # mostly running already: abort sooner
            delay /= 2
    assert seen[AbortStatus.REVOKED] and seen[AbortStatus.ABORTED], seen  # both sides of the race
    for task, outcome in zip(tasks, outcomes, strict=True):
        result = await task.wait_result(timeout=30)
        started = "started" in events.all(task.task_id)
        if outcome.status is AbortStatus.FINISHED:
            assert result.return_value == "slept", (outcome, events.all(task.task_id))
        else:
            assert outcome.status in (AbortStatus.ABORTED, AbortStatus.REVOKED)
            assert isinstance(result.error, TaskAbortedError), outcome
        if outcome.status is AbortStatus.REVOKED:
            assert not started, f"revoked task {task.task_id} ran its body"


async def test_bad_control_messages_do_not_stop_the_worker(
    client, worker_factory, events, rclient: redis.Redis, prefix: str
) -> None:
    worker = worker_factory().start()
    running = await _running(client, events, "sleeper", 60)
    junk = [
        b"not json",
        b"\xff\xfe",
        json.dumps({"v": 99, "type": "abort", "task_id": running.task_id}).encode(),
        json.dumps({"v": 2, "type": "abort", "task_id": 42}).encode(),
        json.dumps({"v": 2, "type": "abort", "task_id": "x", "reason": ["no"]}).encode(),
        json.dumps([1, 2, 3]).encode(),
        b"{" * 100_000,
    ]
    channel = KeySpace(prefix).worker_channel(worker.live_workers()[0])
    for message in junk:
        assert rclient.publish(channel, message) == 1
    # The worker ignored all of that (the task still runs) and still does its job.
    assert (
        await (await client.find_task("quick").kiq(4)).wait_result(timeout=10)
    ).return_value == 8
    assert (await running.abort()).status is AbortStatus.ABORTED
    assert "malformed control message" in worker.log.read_text()


async def test_result_round_trip_in_a_fresh_process(
    client, worker_factory, events, redis_url, prefix
) -> None:
    worker_factory().start()
    task = await _running(client, events, "sleeper", 60)
    await task.abort(reason="why not")
    await task.wait_result(timeout=10)
    reader = f"""
import asyncio, json
from taskiq_redis import RedisAsyncResultBackend
import taskiq_abort
async def main():
    backend = RedisAsyncResultBackend({redis_url!r}, prefix_str={prefix + ":result"!r})
    result = await backend.get_result({task.task_id!r})
    err = result.error
    print(json.dumps([type(err).__module__, type(err).__name__, err.task_id, err.reason,
                      isinstance(err, taskiq_abort.TaskAbortedError)]))
    await backend.shutdown()
asyncio.run(main())
"""
    out = subprocess.run(
        [sys.executable, "-c", reader], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    assert json.loads(out.splitlines()[-1]) == [
        "taskiq_abort.errors",
        "TaskAbortedError",
        task.task_id,
        "why not",
        True,
    ]


async def test_unreachable_redis_at_abort_time() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    from taskiq import InMemoryBroker

    broker = InMemoryBroker().with_middlewares(AbortMiddleware(url))
    started = time.monotonic()
    with pytest.raises(AbortBackendUnavailableError, match="cannot reach Redis") as info:
        await abort(broker, "some-task-id")
    assert time.monotonic() - started < 10  # bounded, not a hang
    assert "some-task-id" in str(info.value)
    middleware = broker.middlewares[0]
    assert isinstance(middleware, AbortMiddleware)
    assert not middleware.backend._waiters  # type: ignore[attr-defined]
    await middleware.backend.close()


async def test_finished_consumes_nothing_with_keep_results_false(
    redis_url, prefix, worker_factory
) -> None:
    from taskiq_redis import RedisAsyncResultBackend

    broker = make_broker(redis_url, prefix)
    broker.result_backend = RedisAsyncResultBackend(
        redis_url, prefix_str=f"{prefix}:result", keep_results=False
    )
    await broker.startup()
    try:
        worker_factory().start()
        task = await broker.find_task("quick").kiq(7)
        while not await task.is_ready():  # is_ready (EXISTS) reads nothing
            await asyncio.sleep(0.01)
        assert (await task.abort()).status is AbortStatus.FINISHED
        assert (await task.get_result()).return_value == 14  # still there, read once
    finally:
        await broker.shutdown()


async def test_smart_retry_middleware_does_not_retry_an_abort(
    redis_url, prefix, worker_factory, events, rclient
) -> None:
    worker_factory(env={"TASKIQ_ABORT_TEST_RETRY": "smart"}).start()
    broker = make_broker(redis_url, prefix)
    await broker.startup()
    try:
        task = await _running(broker, events, "flaky")
        assert (await task.abort()).status is AbortStatus.ABORTED
        assert isinstance((await task.wait_result(timeout=10)).error, TaskAbortedError)
        assert rclient.xlen(f"{prefix}:queue") == 1
    finally:
        await broker.shutdown()


async def test_a_long_non_ascii_reason_still_aborts(client, worker_factory, events) -> None:
    worker_factory().start()
    task = await _running(client, events, "sleeper", 60)
    reason = "😀" * 1024  # the longest reason kept; 4 bytes a character on the wire
    outcome = await task.abort(reason=reason)
    assert outcome.status is AbortStatus.ABORTED
    assert (await task.wait_result(timeout=10)).error.reason == reason


async def test_a_read_only_replica_gives_a_clear_error(redis_server) -> None:
    from taskiq import InMemoryBroker

    from taskiq_abort import AbortBackendError
    from tests.support.redis_servers import RedisServer

    replica = RedisServer(extra=["--replicaof", "127.0.0.1", str(redis_server.port)]).start()
    try:
        broker = InMemoryBroker().with_middlewares(AbortMiddleware(replica.url))
        with pytest.raises(AbortBackendError, match="writable Redis") as info:
            await abort(broker, "task-on-a-replica")
        assert "task-on-a-replica" in str(info.value)
        await broker.middlewares[0].backend.close()
    finally:
        replica.cleanup()


async def test_sync_tasks_still_run_in_a_process_pool(
    redis_url, prefix, worker_factory, monkeypatch
) -> None:
    """--use-process-pool pickles sync task functions: the middleware must not break them."""
    monkeypatch.setenv("TASKIQ_ABORT_TEST_URL", redis_url)
    monkeypatch.setenv("TASKIQ_ABORT_TEST_PREFIX", prefix)
    import importlib

    import tests.pool_app

    pool_app = importlib.reload(tests.pool_app)
    worker = worker_factory(extra_args=("--use-process-pool",))
    worker.args[worker.args.index("tests.app:broker")] = "tests.pool_app:broker"
    worker.start()
    await pool_app.broker.startup()
    try:
        task = await pool_app.add_one.kiq(41)
        result = await task.wait_result(timeout=30)
        assert (result.return_value, result.error) == (42, None)
    finally:
        await pool_app.broker.shutdown()
