"""Graceful, then forced (``abort(grace=...)``), and sync bodies interrupted in their thread
(``AbortMiddleware(interrupt_threads=True)``): in-process, and on a real ``taskiq worker``."""

from __future__ import annotations

import asyncio
import random
import sys
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from taskiq import AsyncBroker, InMemoryBroker, TaskiqDepends

from taskiq_abort import AbortMiddleware, AbortStatus, AbortToken, TaskAbortedError, abort
from taskiq_abort._wire.keys import KeySpace
from tests.conftest import Events, WorkerProcess
from tests.test_cli import cli

pytestmark = pytest.mark.anyio


# --- in-process -----------------------------------------------------------------------
@pytest.fixture
async def local() -> AsyncIterator[tuple[AsyncBroker, dict[str, Any]]]:
    broker = InMemoryBroker(sync_tasks_pool_size=2).with_middlewares(
        AbortMiddleware(interrupt_threads=True)
    )
    seen: dict[str, Any] = {"started": asyncio.Event(), "log": []}

    @broker.task(task_name="polite")
    async def polite(mode: str, token: AbortToken = TaskiqDepends()) -> str:
        seen["started"].set()
        if mode == "ignore":
            try:
                await asyncio.sleep(60)
            finally:
                seen["log"].append(f"cancelled, token set: {token.is_aborted}")
        await token.wait()  # with a grace period: set at once, and nothing is cancelled
        seen["log"].append("token set")
        if mode == "raise":
            token.raise_if_aborted()
        return "partial"

    loop = asyncio.get_running_loop()

    @broker.task(task_name="count")
    def count(n: int, value: int) -> int:
        started = seen.get(value)
        if started is not None:  # tell the test, which aborts it now
            loop.call_soon_threadsafe(started.set)
        for _ in range(n):
            pass
        return value

    await broker.startup()
    yield broker, seen
    await broker.shutdown()


@pytest.mark.parametrize(
    ("mode", "status", "forced", "result"),
    [
        ("raise", AbortStatus.ABORTED, False, TaskAbortedError),  # stopped through the token
        ("return", AbortStatus.FINISHED, False, "partial"),  # returned within its grace
        ("ignore", AbortStatus.ABORTED, True, TaskAbortedError),  # cancelled when it ran out
    ],
)
async def test_grace_paths(local: Any, mode: str, status: AbortStatus, forced: bool, result: Any):
    broker, seen = local
    task = await broker.find_task("polite").kiq(mode)
    await seen["started"].wait()
    # Long enough for the polite bodies never to be forced; short for the one that ignores it.
    outcome = await task.abort(reason="wind down", grace=0.2 if mode == "ignore" else 60)
    assert (outcome.status, outcome.forced) == (status, forced)
    stored = await task.wait_result(timeout=5)
    if result is TaskAbortedError:
        assert isinstance(stored.error, TaskAbortedError)
        assert stored.error.reason == "wind down"
    else:
        assert stored.return_value == result
    expected = ["cancelled, token set: True"] if mode == "ignore" else ["token set"]
    assert seen["log"] == expected
    assert outcome.to_dict()["forced"] is forced


async def test_grace_outlives_the_callers_timeout(local: Any) -> None:
    broker, seen = local
    task = await broker.find_task("polite").kiq("ignore")
    await seen["started"].wait()
    first = await task.abort(grace=0.2, timeout=0)  # nobody waits: the worker still enforces
    assert first.status is AbortStatus.UNCONFIRMED
    stored = await task.wait_result(timeout=10)
    assert isinstance(stored.error, TaskAbortedError)
    again = await task.abort()  # the record tells how it ended
    assert (again.status, again.forced) == (AbortStatus.ABORTED, True)


async def test_a_second_abort_without_grace_forces_now(local: Any) -> None:
    broker, seen = local
    task = await broker.find_task("polite").kiq("ignore")
    await seen["started"].wait()
    first = await task.abort(grace=3600, wait=False)
    assert first.status is AbortStatus.UNCONFIRMED
    second = await task.abort(reason="now")
    assert (second.status, second.forced) == (AbortStatus.ABORTED, True)
    assert seen["log"] == ["cancelled, token set: True"]


async def test_grace_is_validated(local: Any) -> None:
    broker, _ = local
    with pytest.raises(ValueError, match="grace"):
        await abort(broker, "some-id", grace=-1)
    with pytest.raises(TypeError, match="grace"):
        await abort(broker, "some-id", grace="5")  # type: ignore[arg-type]


async def test_aborts_racing_sync_tasks_never_hit_the_wrong_task_or_a_pool_thread(
    local: Any,
) -> None:
    """1,000 aborts of sync tasks that end as the abort lands, beside tasks nobody aborts on
    the same two pool threads: an interrupt lands in its own task's body or nowhere."""
    broker, seen = local
    count = broker.find_task("count")
    deaths: list[BaseException | None] = []
    hook, switch = threading.excepthook, sys.getswitchinterval()
    threading.excepthook = lambda args: deaths.append(args.exc_value)
    sys.setswitchinterval(0.0005)  # the loop thread gets the GIL back from a spinning body sooner
    rounds = 1000
    n = 2000  # loop length: doubled when the task won the race, halved when the abort did
    said: Counter[str] = Counter()
    try:
        for i in range(rounds):
            started = seen[i] = asyncio.Event()
            target = await count.kiq(n, i)
            bystander = await count.kiq(random.randint(0, 2 * n), -i)
            await started.wait()
            outcome = await target.abort(timeout=10)
            said[outcome.status.value] += 1
            stored = await target.wait_result(timeout=10, check_interval=0.001)
            if outcome.status is AbortStatus.FINISHED:
                assert stored.return_value == i, stored
                n *= 2
            else:
                assert outcome.status is AbortStatus.ABORTED, outcome
                assert isinstance(stored.error, TaskAbortedError), stored
                n = max(1, n // 2)
            other = await bystander.wait_result(timeout=10, check_interval=0.001)
            assert not other.is_err and other.return_value == -i, other
        after = await (await count.kiq(10, 42)).wait_result(timeout=10)
        assert after.return_value == 42  # the pool still works
    finally:
        threading.excepthook = hook
        sys.setswitchinterval(switch)
    assert deaths == []
    print(f"\n{rounds} racing aborts: {dict(said)}")
    assert said["aborted"] and said["finished"], said  # both sides of the race happened


# --- a real worker ------------------------------------------------------------------
@pytest.fixture
def stop_worker(redis_url: str, prefix: str) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(
        redis_url, prefix, broker="list", env={"TASKIQ_ABORT_TEST_INTERRUPT": "1"}
    )
    with worker:
        yield worker


async def test_worker_grace_then_forced(
    stop_worker: WorkerProcess, client_of: AsyncBroker, events: Events
) -> None:
    graceful = client_of.find_task("graceful")
    polite = await graceful.kiq("raise")
    stubborn = await graceful.kiq("ignore")
    for task in (polite, stubborn):
        await asyncio.to_thread(events.wait, task.task_id, "started")
    on_its_own = await abort(client_of, polite, grace=60, reason="wind down")
    assert (on_its_own.status, on_its_own.forced) == (AbortStatus.ABORTED, False)
    assert "token set" in events.all(polite.task_id)
    # The CLI's --grace, as an operator would: the line ends with "forced".
    proc = await asyncio.to_thread(
        cli, "--redis-url", stop_worker.url, "--prefix", stop_worker.prefix,
        "--grace", "0.3", "--timeout", "10", stubborn.task_id,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[1] == "aborted" and proc.stdout.split()[-1] == "forced"
    await asyncio.to_thread(events.wait, stubborn.task_id, "cancelled, token set: True")
    for task in (polite, stubborn):
        result = await task.wait_result(timeout=10)
        assert isinstance(result.error, TaskAbortedError)


async def test_worker_interrupts_a_pure_python_loop(
    stop_worker: WorkerProcess, client_of: AsyncBroker, events: Events
) -> None:
    task = await client_of.find_task("spin").kiq()
    await asyncio.to_thread(events.wait, task.task_id, "started")
    outcome = await abort(client_of, task, timeout=10)
    assert outcome.status is AbortStatus.ABORTED
    result = await task.wait_result(timeout=10)
    assert isinstance(result.error, TaskAbortedError)
    print(f"\nspin: abort -> confirmed {outcome.elapsed * 1000:.1f} ms")
    # The pool thread it ran on is fine: the same worker runs the next sync task.
    again = await client_of.find_task("sync_ignorer").kiq("nobody-releases-this")
    await asyncio.to_thread(events.wait, again.task_id, "started")
    assert (await abort(client_of, again, timeout=10)).status is AbortStatus.ABORTED


async def test_a_sync_body_that_catches_the_interrupt_and_returns_is_finished(
    stop_worker: WorkerProcess, client_of: AsyncBroker, events: Events
) -> None:
    """As an async body that catches the ``CancelledError`` and returns: it ran on, so its own
    result is stored and the abort says ``finished``, never ``aborted``."""
    task = await client_of.find_task("catches_interrupt").kiq()
    await asyncio.to_thread(events.wait, task.task_id, "started")
    outcome = await abort(client_of, task, timeout=10)
    result = await task.wait_result(timeout=10)
    assert "caught" in events.all(task.task_id)
    assert outcome.status is AbortStatus.FINISHED, outcome
    assert result.return_value == "returned after the interrupt", result


async def test_worker_interrupt_lands_when_a_blocking_call_returns(
    stop_worker: WorkerProcess, client_of: AsyncBroker, events: Events
) -> None:
    task = await client_of.find_task("sleepy").kiq(1.0)
    await asyncio.to_thread(events.wait, task.task_id, "started")
    outcome = await abort(client_of, task, timeout=15)  # lands once time.sleep() returns
    assert outcome.status is AbortStatus.ABORTED
    result = await task.wait_result(timeout=10)
    assert isinstance(result.error, TaskAbortedError)
    assert "ran on" not in events.all(task.task_id)


async def test_the_request_outlives_a_grace_longer_than_request_ttl(
    redis_url: str, prefix: str, rclient: Any
) -> None:
    """The record is what a resyncing worker and a later ``abort()`` read: it must not expire
    while the worker still counts the grace down."""
    broker = InMemoryBroker().with_middlewares(
        AbortMiddleware(redis_url, prefix=prefix, request_ttl=1)
    )
    started = asyncio.Event()

    @broker.task(task_name="stubborn")
    async def stubborn() -> None:
        started.set()
        await asyncio.sleep(60)

    await broker.startup()
    try:
        task = await stubborn.kiq()
        await started.wait()
        first = await task.abort(grace=120, wait=False)
        assert first.status is AbortStatus.UNCONFIRMED
        assert rclient.pttl(KeySpace(prefix).request(task.task_id)) > 120_000
        now = await task.abort(timeout=10)  # a second abort, without grace: forced at once
        assert (now.status, now.forced) == (AbortStatus.ABORTED, True)
    finally:
        await broker.shutdown()
