"""Faults injected for real (issue 4, points 1-6): cut pub/sub connections, restart and pause
redis-server processes, SIGKILL and SIGTERM worker processes, bad messages on the channel.

Tests that stop or restart Redis start a server of their own; the session server stays up.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from taskiq_abort import (
    AbortBackendUnavailableError,
    AbortStatus,
    InvalidTaskIdError,
    TaskAbortedError,
    abort,
)
from taskiq_abort._wire.keys import KeySpace
from taskiq_abort._wire.protocol import AbortMessage
from tests.conftest import Events, WorkerProcess
from tests.faultkit import (
    apoll,
    client_broker,
    held,
    own_server,
    spawn,
    wait_log,
    worker_log,
)
from tests.support.redis_servers import free_port

pytestmark = pytest.mark.anyio

LOST = "lost the control channel"
UNAVAILABLE = "abort registry unavailable"
REACHABLE = "Redis reachable again after"  # one INFO line when the last connection is back
DOWN = "[taskiq_abort][WARNING]"  # one line when the first notices, whichever it is


async def _start_sleepers(broker, events: Events, n: int, seconds: float = 60) -> list:
    tasks = [await broker.find_task("sleeper").kiq(seconds) for _ in range(n)]
    for task in tasks:
        events.wait(task.task_id, "started")
    return tasks


async def _assert_aborted(task, events: Events) -> None:
    events.wait(task.task_id, "finally")
    result = await task.wait_result(timeout=15)
    assert result.is_err
    assert isinstance(result.error, TaskAbortedError), result.error


# --- 1. control connection drops -------------------------------------------------------------
async def test_aborts_requested_while_pubsub_is_cut_apply_after_reconnect(
    redis_url, prefix, rclient, worker_factory, events: Events
) -> None:
    worker = worker_factory().start()
    async with client_broker(redis_url, prefix) as client:
        tasks = await _start_sleepers(client, events, 3)
        keys = KeySpace(prefix)
        channel = keys.worker_channel(worker.live_workers()[0])
        # One transaction: cut every subscriber, then make three abort requests the way abort()
        # records them (durable record, then the message to the holder). Nobody hears them.
        pipe = rclient.pipeline(transaction=True)
        pipe.client_kill_filter(_type="pubsub")
        for task in tasks:
            pipe.hset(
                keys.request(task.task_id), mapping={"at": "0", "by": "test", "reason": "gap"}
            )
            pipe.pexpire(keys.request(task.task_id), 60_000)
            pipe.publish(channel, AbortMessage(task.task_id, "gap").encode())
        replies = pipe.execute()
        assert replies[0] >= 1  # the worker's subscription was cut...
        assert replies[3::3] == [0, 0, 0]  # ...and every broadcast reached nobody

        # The worker resubscribes, reads the durable records and applies all three.
        for task in tasks:
            await _assert_aborted(task, events)
            assert (await task.wait_result()).error.reason == "gap"
        for task in tasks:  # and the records say so: a later abort() reports it as done
            outcome = await task.abort(timeout=10)
            assert outcome.status is AbortStatus.ABORTED

        # Real abort() calls racing fresh cuts: each may land before, in or after the gap.
        for _ in range(5):
            (task,) = await _start_sleepers(client, events, 1)
            rclient.client_kill_filter(_type="pubsub")
            outcome = await task.abort(reason="racing a cut", timeout=15)
            assert outcome.status is AbortStatus.ABORTED
            await _assert_aborted(task, events)

    # Logged once per outage (one per cut), never per message; and the recovery is logged.
    log = wait_log(worker, REACHABLE, count=6)
    assert log.count(LOST) == 6, log[-3000:]


async def test_long_outage_logs_once_and_tasks_run_fail_open(
    redis_url, prefix, rclient, events: Events
) -> None:
    """Point 3, fail open: the abort plane's Redis dies while the broker's stays up."""
    with own_server() as plane:
        env = {"TASKIQ_ABORT_TEST_ABORT_URL": plane.url}
        with spawn(redis_url, prefix, ready=False, env=env) as worker:
            async with client_broker(redis_url, prefix, abort_url=plane.url) as client:
                await apoll(lambda: client_workers(client), 30, "the worker to register")
                for outage in (1, 2):
                    plane.stop()
                    tasks = [await client.find_task("quick").kiq(i) for i in range(20)]
                    for i, task in enumerate(tasks):  # the add-on never stops task processing
                        assert (await task.wait_result(timeout=30)).return_value == i * 2
                    wait_log(worker, DOWN, count=outage)
                    plane.start()  # same port, empty: the worker re-registers by itself
                    wait_log(worker, REACHABLE, count=outage)
                    await apoll(lambda: client_workers(client), 30, "re-registration")
                    (task,) = await _start_sleepers(client, events, 1)
                    await apoll(lambda t=task: held_id(client, t.task_id), 30, "registered")
                    assert (await task.abort(timeout=10)).status is AbortStatus.ABORTED
                    await _assert_aborted(task, events)
                log = worker_log(worker)
                # One warning per outage, although 20 tasks and many reconnects hit each one
                # (the registry and the control channel both notice it), one line back.
                assert log.count(DOWN) == 2, log[-3000:]
                assert log.count(REACHABLE) == 2, log[-3000:]


async def client_workers(client) -> bool:
    return bool(await find_backend(client).workers())


async def held_id(client, task_id: str) -> bool:
    return task_id in await held(client)


def find_backend(client):
    from taskiq_abort import find_middleware

    return find_middleware(client).backend


async def test_fail_closed_refuses_tasks_while_registry_is_unreachable(
    redis_url, prefix, events: Events
) -> None:
    with own_server() as plane:
        env = {"TASKIQ_ABORT_TEST_ABORT_URL": plane.url, "TASKIQ_ABORT_TEST_FAIL_CLOSED": "1"}
        with spawn(redis_url, prefix, ready=False, env=env) as worker:
            async with client_broker(redis_url, prefix, abort_url=plane.url) as client:
                await apoll(lambda: client_workers(client), 30, "the worker to register")
                plane.stop()
                task = await client.find_task("quick").kiq(1)
                result = await task.wait_result(timeout=30)
                assert result.is_err
                assert isinstance(result.error, AbortBackendUnavailableError), result.error
                assert "started" not in events.all(task.task_id)  # the body never ran
                assert "fail_closed" in wait_log(worker, UNAVAILABLE)
                plane.start()
                wait_log(worker, REACHABLE)
                task = await client.find_task("quick").kiq(2)
                assert (await task.wait_result(timeout=30)).return_value == 4


# --- 2. Redis restarts and loses its data ----------------------------------------------------
async def test_redis_restart_losing_data_workers_reregister(redis_url, prefix, events) -> None:
    """The abort plane's Redis is SIGKILLed and started again, empty, on the same port.

    The task broker stays on the session server: taskiq-redis brokers end the worker process
    when their own connection breaks (taskiq then restarts it), which is not ours to fix.
    """
    with own_server() as plane:
        env = {"TASKIQ_ABORT_TEST_ABORT_URL": plane.url, "TASKIQ_ABORT_TEST_LEASE": "1"}
        with spawn(redis_url, prefix, ready=False, env=env) as worker:
            async with client_broker(redis_url, prefix, abort_url=plane.url) as client:
                await apoll(lambda: client_workers(client), 30, "the worker to register")
                pids = worker.child_pids()
                (before,) = await _start_sleepers(client, events, 1)
                await apoll(lambda: held_id(client, before.task_id), 10, "registration")
                run_id = plane.client().info("server")["run_id"]
                plane.restart()  # SIGKILL, start again on the same port: every key is gone
                # A new process that persists nothing (the worker may already be re-registering,
                # so counting keys here would race it).
                assert plane.client().info("server")["run_id"] != run_id
                # The worker notices (heartbeat/resubscribe) and registers what it still runs.
                await apoll(lambda: held_id(client, before.task_id), 30, "re-registration")
                outcome = await before.abort(reason="after restart", timeout=10)
                assert outcome.status is AbortStatus.ABORTED
                await _assert_aborted(before, events)
                # New tasks are abortable too, on the very same worker processes.
                (after,) = await _start_sleepers(client, events, 1)
                await apoll(lambda: held_id(client, after.task_id), 10, "registration")
                assert (await after.abort(timeout=10)).status is AbortStatus.ABORTED
                await _assert_aborted(after, events)
                assert worker.child_pids() == pids  # no worker process was restarted


# --- 3. Redis unreachable at abort() ---------------------------------------------------------
async def test_abort_with_redis_refusing_connections_fails_fast(redis_url, prefix) -> None:
    dead = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"
    async with client_broker(redis_url, prefix, abort_url=dead) as client:
        task = await client.find_task("quick").kiq(1)
        started = time.monotonic()
        with pytest.raises(AbortBackendUnavailableError) as info:
            await task.abort()
        assert time.monotonic() - started < 10
        assert "hunter2" not in str(info.value) and "hunter2" not in repr(info.value)
        assert "***" in str(info.value)


async def test_abort_with_redis_hanging_fails_in_bounded_time(redis_url, prefix) -> None:
    """A SIGSTOPped server accepts connections and never answers: no hang, a clear error."""
    with own_server() as plane:
        async with client_broker(redis_url, prefix, abort_url=plane.url) as client:
            task = await client.find_task("quick").kiq(1)
            assert plane.proc is not None
            os.kill(plane.proc.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                with pytest.raises(AbortBackendUnavailableError):
                    await task.abort()
                elapsed = time.monotonic() - started
                assert elapsed < 20, elapsed
            finally:
                os.kill(plane.proc.pid, signal.SIGCONT)
            # Nothing is stuck: the same client works as soon as Redis answers again.
            assert (await task.abort(timeout=10)).status in (
                AbortStatus.REVOKED,
                AbortStatus.FINISHED,
            )


# --- 4. worker SIGKILL -----------------------------------------------------------------------
async def test_sigkilled_worker_entries_expire_within_lease(
    redis_url, prefix, worker_factory, events: Events
) -> None:
    lease = 1.0
    worker = worker_factory(env={"TASKIQ_ABORT_TEST_LEASE": str(lease)}).start()
    async with client_broker(redis_url, prefix, lease=lease) as client:
        (task,) = await _start_sleepers(client, events, 1)
        await apoll(lambda: held_id(client, task.task_id), 10, "the entry")
        worker.stop()  # SIGKILL to the whole process group: no shutdown code runs
        killed = time.monotonic()
        await apoll(lambda: _not(held_id(client, task.task_id)), 10, "the entry to expire")
        gone_after = time.monotonic() - killed
        assert gone_after < lease + 2, gone_after  # the lease, plus generous polling slack
        assert not await client_workers(client)
        outcome = await task.abort(timeout=5)
        assert outcome.status is AbortStatus.REVOKED  # nobody holds it any more
        assert outcome.worker is None
        assert isinstance((await task.wait_result(timeout=5)).error, TaskAbortedError)


async def _not(awaitable) -> bool:
    return not await awaitable


# --- 5. graceful shutdown --------------------------------------------------------------------
async def test_abort_during_graceful_drain_and_bounded_shutdown(
    redis_url, prefix, worker_factory, events: Events
) -> None:
    # ListQueueBroker: a RedisStreamBroker worker hangs after SIGTERM in taskiq-redis 1.2.4
    # (see ../shared/taskiq-internals.md, section 7, pitfall ii), with or without this add-on.
    kind = "list"
    worker = worker_factory(broker=kind).start()
    async with client_broker(redis_url, prefix, kind) as client:
        (task,) = await _start_sleepers(client, events, 1)
        assert worker.proc is not None
        os.kill(worker.proc.pid, signal.SIGTERM)  # the main process passes it on to children
        wait_log(worker, "Stopping prefetching messages")  # draining: waits for our task
        outcome = await task.abort(reason="shutting down", timeout=10)
        assert outcome.status is AbortStatus.ABORTED
        await _assert_aborted(task, events)
        stopping = time.monotonic()
        worker.proc.wait(timeout=20)  # raises if the worker hangs: nothing may block the exit
        assert time.monotonic() - stopping < 20
        assert worker.live_workers() == []  # unregistered on the way out, not left to the lease


async def test_middleware_shutdown_is_bounded_when_redis_hangs(redis_url, prefix) -> None:
    with own_server() as plane:
        env = {"TASKIQ_ABORT_TEST_ABORT_URL": plane.url}
        with spawn(redis_url, prefix, ready=False, broker="list", env=env) as worker:
            async with client_broker(redis_url, prefix, "list", abort_url=plane.url) as client:
                await apoll(lambda: client_workers(client), 30, "the worker to register")
            assert plane.proc is not None and worker.proc is not None
            os.kill(plane.proc.pid, signal.SIGSTOP)
            try:
                stopping = time.monotonic()
                os.kill(worker.proc.pid, signal.SIGTERM)
                worker.proc.wait(timeout=30)
                assert time.monotonic() - stopping < 30
            finally:
                os.kill(plane.proc.pid, signal.SIGCONT)


# --- 6. bad input ----------------------------------------------------------------------------
BAD_MESSAGES: list[bytes] = [
    b"not json",
    b"\xff\xfe\x00garbage",
    b"",
    b"null",
    b"[1, 2, 3]",
    b"[" * 8000,  # nested deeper than the JSON decoder can go
    b'{"v": 3, "type": "abort", "task_id": "t"}',  # a future version
    b'{"v": 1, "type": "abort", "task_id": "t"}',  # the broadcast version 1
    b'{"v": true, "type": "abort", "task_id": "t"}',
    b'{"v": 2, "type": "abort", "task_id": 12345}',
    b'{"v": 2, "type": "abort", "task_id": ""}',
    b'{"v": 2, "type": "abort", "task_id": "t", "reason": ["x"]}',
    b'{"v": 2, "type": "abort", "task_id": "t", "reply_to": 7}',
    b'{"v": 2, "type": "abort", "task_id": "t", "at": "soon"}',
    b'{"v": 2, "type": "bogus", "task_id": "t"}',
    b'{"v": 2, "type": "abort", "task_id": "' + b"x" * 1_000_000 + b'"}',  # huge
]


async def test_malformed_control_messages_are_ignored_and_counted(
    redis_url, prefix, rclient, worker_factory, events: Events
) -> None:
    worker = worker_factory().start()
    control = KeySpace(prefix).worker_channel(worker.live_workers()[0])
    async with client_broker(redis_url, prefix) as client:
        (task,) = await _start_sleepers(client, events, 1)
        for message in BAD_MESSAGES:
            assert rclient.publish(control, message) == 1
        # Still listening, still working: the running task is aborted as usual.
        assert (await task.abort(timeout=10)).status is AbortStatus.ABORTED
        await _assert_aborted(task, events)
        new = await client.find_task("quick").kiq(4)
        assert (await new.wait_result(timeout=30)).return_value == 8
        state = await (await client.find_task("introspect").kiq()).wait_result(timeout=30)
        assert state.return_value["malformed"] == len(BAD_MESSAGES)
    assert "ignored 1 malformed control message" in worker_log(worker)


async def test_invalid_task_ids_are_refused_before_redis(redis_url, prefix) -> None:
    # The abort plane points at a port nobody listens on: reaching Redis would raise
    # AbortBackendUnavailableError, so InvalidTaskIdError proves nothing was sent.
    dead = f"redis://127.0.0.1:{free_port()}/0"
    async with client_broker(redis_url, prefix, abort_url=dead) as client:
        for bad in ["", "x" * 257, "a\nb", "nul\x00", "del\x7f", 42, None, b"bytes"]:
            with pytest.raises(InvalidTaskIdError):
                await abort(client, bad)  # type: ignore[arg-type]
        with pytest.raises(AbortBackendUnavailableError):  # a good id does try to reach it
            await abort(client, "fine-id", timeout=1)


async def test_prefixes_isolate_apps(redis_url, rclient, prefix, worker_factory) -> None:
    """Two apps share one Redis; the same task id runs in both; aborting in one never touches
    the other."""
    other = f"{prefix}b"
    worker_a = worker_factory().start()
    async with client_broker(redis_url, prefix) as app_a, client_broker(redis_url, other) as app_b:
        worker_b = WorkerProcess(redis_url, other).start()
        try:
            events_a, events_b = Events(rclient, prefix), Events(rclient, other)
            task_a = await app_a.find_task("sleeper").kicker().with_task_id("shared-id").kiq(60)
            task_b = await app_b.find_task("sleeper").kicker().with_task_id("shared-id").kiq(60)
            events_a.wait("shared-id", "started")
            events_b.wait("shared-id", "started")

            outcome = await task_b.abort(reason="app b only", timeout=10)
            assert outcome.status is AbortStatus.ABORTED
            await _assert_aborted(task_b, events_b)
            # App A's copy still runs, is still registered, has no request and no result.
            assert "finally" not in events_a.all("shared-id")
            assert await held_id(app_a, "shared-id")
            assert not rclient.exists(KeySpace(prefix).request("shared-id"))
            assert not await task_a.is_ready()
            assert (await task_a.abort(timeout=10)).status is AbortStatus.ABORTED
            await _assert_aborted(task_a, events_a)
        finally:
            worker_b.stop()
    assert worker_a.proc is not None


# --- cleanup after an abort: edge (default) vs level cancellation --------------------------
@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("edge", ["plain await in finally completed"]),
        ("level", ["plain await in finally cancelled", "shielded await completed"]),
    ],
)
async def test_awaits_in_finally_after_abort(mode: str, expected: list[str]) -> None:
    """docs/guarantees.md: by default async clean-up in ``finally`` runs as after
    ``Task.cancel()``; with ``cancel_mode="level"`` every await in the scope is cancelled, so
    clean-up must use ``shield()``."""
    import asyncio

    from taskiq import InMemoryBroker

    from taskiq_abort import AbortMiddleware, shield

    broker = InMemoryBroker().with_middlewares(AbortMiddleware(cancel_mode=mode))
    started, log = asyncio.Event(), []

    @broker.task
    async def cleans_up() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        finally:
            try:
                await asyncio.sleep(0.01)
                log.append("plain await in finally completed")
            except asyncio.CancelledError:
                log.append("plain await in finally cancelled")
                async with shield():
                    await asyncio.sleep(0.01)
                    log.append("shielded await completed")
                raise

    await broker.startup()
    try:
        task = await cleans_up.kiq()
        await started.wait()
        assert (await task.abort(timeout=5)).status is AbortStatus.ABORTED
        assert isinstance((await task.wait_result(timeout=5)).error, TaskAbortedError)
        assert log == expected
    finally:
        await broker.shutdown()
