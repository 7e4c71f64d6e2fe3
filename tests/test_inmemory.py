"""The in-process backend with ``InMemoryBroker``: the same semantics, no Redis."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import anyio
import pytest
from taskiq import InMemoryBroker, TaskiqDepends
from taskiq.middlewares import SimpleRetryMiddleware

from taskiq_abort import (
    AbortableTask,
    AbortConfigError,
    AbortMiddleware,
    AbortStatus,
    AbortToken,
    InvalidTaskIdError,
    MemoryAbortBackend,
    TaskAbortedError,
    abort,
    shield,
)

pytestmark = pytest.mark.anyio


class Probe:
    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.log: list[str] = []


@pytest.fixture
async def setup():
    broker = InMemoryBroker().with_middlewares(AbortMiddleware())
    probe = Probe()

    @broker.task
    async def sleeper() -> str:
        probe.log.append("started")
        probe.started.set()
        try:
            await asyncio.sleep(60)
        finally:
            probe.log.append("finally")
        return "slept"

    @broker.task
    async def quick(x: int) -> int:
        probe.log.append(f"quick {x}")
        return x + 1

    @broker.task
    async def critical() -> str:
        probe.started.set()
        async with shield():
            await asyncio.sleep(0.05)
            probe.log.append("committed")
        await asyncio.sleep(60)
        return "unreachable"

    await broker.startup()
    yield broker, probe, sleeper, quick, critical
    await broker.shutdown()


async def test_abort_running(setup) -> None:
    _broker, probe, sleeper, _, _ = setup
    task = await sleeper.kiq()
    assert isinstance(task, AbortableTask)
    await probe.started.wait()
    outcome = await task.abort(reason="enough")
    assert outcome.status is AbortStatus.ABORTED
    assert probe.log == ["started", "finally"]
    result = await task.wait_result(timeout=5)
    assert isinstance(result.error, TaskAbortedError)
    assert result.error.reason == "enough"


async def test_revoked_before_it_starts(setup) -> None:
    broker, probe, _, quick, _ = setup
    outcome = await abort(broker, "later-id", reason="not wanted")
    assert outcome.status is AbortStatus.REVOKED
    task = await quick.kicker().with_task_id("later-id").kiq(1)
    result = await task.wait_result(timeout=5)
    assert isinstance(result.error, TaskAbortedError)
    assert probe.log == []  # the body never ran


async def test_finished(setup) -> None:
    _broker, _, _, quick, _ = setup
    task = await quick.kiq(1)
    assert (await task.wait_result(timeout=5)).return_value == 2
    assert (await task.abort()).status is AbortStatus.FINISHED
    assert (await task.wait_result(timeout=5)).return_value == 2


async def test_shield(setup) -> None:
    _broker, probe, _, _, critical = setup
    task = await critical.kiq()
    await probe.started.wait()
    assert (await task.abort()).status is AbortStatus.ABORTED
    assert probe.log == ["committed"]


async def test_direct_calls_are_untouched(setup) -> None:
    _, _, _, quick, _ = setup
    assert await quick(41) == 42


async def test_unknown_broker_and_bad_ids() -> None:
    plain = InMemoryBroker()
    with pytest.raises(AbortConfigError, match="with_middlewares"):
        await abort(plain, "x")
    broker = InMemoryBroker().with_middlewares(AbortMiddleware())
    for bad in ["", "x" * 300, "a\nb", "\x00"]:
        with pytest.raises(InvalidTaskIdError):
            await abort(broker, bad)


async def test_sync_task_token() -> None:
    broker = InMemoryBroker().with_middlewares(AbortMiddleware(backend=MemoryAbortBackend()))
    entered = threading.Event()

    @broker.task
    def checker(token: AbortToken = TaskiqDepends()) -> str:
        entered.set()
        token.wait_sync(30)
        token.raise_if_aborted()
        return "ran"

    await broker.startup()
    try:
        task = await checker.kiq()
        await asyncio.to_thread(entered.wait, 30)
        assert (await task.abort()).status is AbortStatus.ABORTED
        assert isinstance((await task.wait_result(timeout=5)).error, TaskAbortedError)
    finally:
        await broker.shutdown()


async def test_await_inplace_does_not_cancel_the_caller() -> None:
    broker = InMemoryBroker(await_inplace=True).with_middlewares(AbortMiddleware())
    await broker.startup()
    try:

        @broker.task
        async def plain() -> int:
            return 1

        await abort(broker, "inplace-id")
        task = await plain.kicker().with_task_id("inplace-id").kiq()
        assert isinstance((await task.wait_result(timeout=5)).error, TaskAbortedError)
        assert (await (await plain.kiq()).wait_result(timeout=5)).return_value == 1
        await asyncio.sleep(0)  # the caller (this test) was not cancelled
    finally:
        await broker.shutdown()


@pytest.mark.parametrize("abort_first", [False, True])
async def test_no_retry_after_abort(abort_first: bool) -> None:
    retry = SimpleRetryMiddleware(default_retry_count=5)
    mw = AbortMiddleware()
    broker = InMemoryBroker().with_middlewares(*([mw, retry] if abort_first else [retry, mw]))
    runs: list[int] = []
    started = asyncio.Event()

    @broker.task(retry_on_error=True)
    async def flaky() -> None:
        runs.append(1)
        started.set()
        await asyncio.sleep(60)

    await broker.startup()
    try:
        task = await flaky.kiq()
        await started.wait()
        assert (await task.abort()).status is AbortStatus.ABORTED
        assert isinstance((await task.wait_result(timeout=5)).error, TaskAbortedError)
        await broker.wait_all()
        assert runs == [1]
    finally:
        await broker.shutdown()


async def test_tasks_decorated_before_the_middleware_are_abortable() -> None:
    broker = InMemoryBroker()
    started = asyncio.Event()

    @broker.task
    async def early() -> int:
        started.set()
        await asyncio.sleep(60)
        return 1

    broker.add_middlewares(AbortMiddleware())
    await broker.startup()
    try:
        task = await early.kiq()
        assert isinstance(task, AbortableTask)
        await started.wait()
        assert (await task.abort()).status is AbortStatus.ABORTED
    finally:
        await broker.shutdown()


@pytest.mark.parametrize("mode", ["edge", "level"])
async def test_cleanup_in_finally(mode: str) -> None:
    """Edge mode: finally blocks await their clean-up as after Task.cancel(). Level mode
    (anyio): awaits in the body stay cancelled, so clean-up must be shielded."""
    broker = InMemoryBroker().with_middlewares(AbortMiddleware(cancel_mode=mode))  # type: ignore[arg-type]
    started = asyncio.Event()
    log: list[str] = []

    @broker.task
    async def with_cleanup() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        finally:
            try:
                await asyncio.sleep(0.01)  # e.g. await session.close()
                log.append("cleaned up")
            except asyncio.CancelledError:
                log.append("clean-up cancelled")
            async with shield():
                await asyncio.sleep(0.01)
                log.append("shielded clean-up")

    await broker.startup()
    try:
        task = await with_cleanup.kiq()
        await started.wait()
        assert (await task.abort()).status is AbortStatus.ABORTED
        expected = "cleaned up" if mode == "edge" else "clean-up cancelled"
        assert log == [expected, "shielded clean-up"]
        assert isinstance((await task.wait_result(timeout=5)).error, TaskAbortedError)
    finally:
        await broker.shutdown()


@pytest.mark.parametrize("mode", ["edge", "level"])
async def test_body_that_keeps_going_after_swallowing(mode: str) -> None:
    """A body that swallows the cancellation and awaits on is stopped at its next await, in
    both modes (edge mode delivers the abort again once the body has dropped it)."""
    broker = InMemoryBroker().with_middlewares(AbortMiddleware(cancel_mode=mode))  # type: ignore[arg-type]
    started = asyncio.Event()
    log: list[str] = []

    @broker.task
    async def stubborn() -> str:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            log.append("swallowed")
        try:
            await asyncio.sleep(0.01)
            log.append("kept going")
        except asyncio.CancelledError:
            log.append("stopped")
            raise
        return "done"

    await broker.startup()
    try:
        task = await stubborn.kiq()
        await started.wait()
        assert (await task.abort()).status is AbortStatus.ABORTED
        assert log == ["swallowed", "stopped"]
        assert isinstance((await task.wait_result(timeout=5)).error, TaskAbortedError)
    finally:
        await broker.shutdown()


async def test_external_cancellation_is_not_an_abort() -> None:
    """A cancel that is not ours (e.g. worker shutdown) passes through untouched."""
    broker = InMemoryBroker().with_middlewares(AbortMiddleware())
    started = asyncio.Event()

    @broker.task
    async def victim() -> None:
        started.set()
        await asyncio.sleep(60)

    await broker.startup()
    try:
        task = await victim.kiq()
        await started.wait()
        for running in list(broker._running_tasks):
            running.cancel()
        result = await task.wait_result(timeout=5)
        assert isinstance(result.error, asyncio.CancelledError)  # taskiq's usual behaviour
    finally:
        await broker.shutdown()


async def test_concurrent_aborts_of_one_task(setup) -> None:
    _, probe, sleeper, _, _ = setup
    task = await sleeper.kiq()
    await probe.started.wait()
    outcomes = await asyncio.gather(*(task.abort() for _ in range(3)))
    assert [o.status for o in outcomes] == [AbortStatus.ABORTED] * 3


async def test_a_second_abort_reports_the_stored_reason(setup) -> None:
    _, probe, sleeper, _, _ = setup
    task = await sleeper.kiq()
    await probe.started.wait()
    assert (await task.abort(reason="first")).reason == "first"
    second = await task.abort(reason="second")
    assert (second.status, second.reason) == (AbortStatus.ABORTED, "first")
    assert (await task.wait_result(timeout=5)).error.reason == "first"


async def test_abortable_task_decorator() -> None:
    from taskiq_abort import abortable_task

    broker = InMemoryBroker()
    started = asyncio.Event()

    @abortable_task(broker, task_name="typed_sleeper")
    async def typed_sleeper(n: int) -> int:
        started.set()
        await asyncio.sleep(60)
        return n

    broker.add_middlewares(AbortMiddleware())  # added after the decoration: still abortable
    await broker.startup()
    try:
        assert typed_sleeper.task_name == "typed_sleeper"
        task = await typed_sleeper.kiq(1)
        await started.wait()
        assert (await task.abort()).status is AbortStatus.ABORTED
    finally:
        await broker.shutdown()


async def test_no_ghost_when_taskiq_cannot_store_the_result() -> None:
    """taskiq skips post_save when set_result fails; the attempt must still leave the registry."""
    from taskiq.brokers.inmemory_broker import InmemoryResultBackend

    class Broken(InmemoryResultBackend[Any]):
        async def set_result(self, task_id: str, result: Any) -> None:
            raise RuntimeError("result store down")

    backend = MemoryAbortBackend(lease=0.3)  # heartbeat (and sweep) every 0.1 s
    broker = InMemoryBroker().with_middlewares(AbortMiddleware(backend=backend))
    broker.result_backend = Broken()

    @broker.task
    async def quick() -> int:
        return 1

    await broker.startup()
    try:
        await quick.kiq()
        await broker.wait_all()  # the callback ran, storing the result failed
        deadline = asyncio.get_running_loop().time() + 10
        while any(w.tasks for w in await backend.workers()):
            assert asyncio.get_running_loop().time() < deadline, "a ghost stayed registered"
            await asyncio.sleep(0.05)  # polling the registry until the sweep has run
    finally:
        await broker.shutdown()


@pytest.mark.parametrize("abort_between", [False, True])
async def test_a_redelivered_copy_running_beside_the_first_is_stopped_too(
    abort_between: bool,
) -> None:
    """A broker that redelivers a task still running (JetStream after ``ack_wait``, a
    RabbitMQ requeue) runs two copies with one id in one worker: an abort stops both, the
    stored result stays the abort's, and the task stays listed until the last copy ends."""
    middleware = AbortMiddleware()
    broker = InMemoryBroker().with_middlewares(middleware)
    entered: asyncio.Queue[int] = asyncio.Queue()
    ended: list[str] = []
    copies = iter(range(2))

    @broker.task
    async def twice() -> str:
        copy = next(copies)
        await entered.put(copy)
        try:
            await asyncio.sleep(60)
        finally:
            ended.append(f"copy {copy} stopped")
        return f"copy {copy} returned"

    await broker.startup()
    try:
        kicker = twice.kicker().with_task_id("redelivered-id")
        task = await kicker.kiq()
        assert await entered.get() == 0
        if abort_between:  # aborted before the redelivery: the copy must not run at all
            outcome = await task.abort(reason="stop")
            assert outcome.status is AbortStatus.ABORTED
            await kicker.kiq()
        else:
            await kicker.kiq()
            assert await entered.get() == 1
            held = await middleware.backend.find_running("redelivered-id")
            assert held is not None
            outcome = await task.abort(reason="stop")
            assert outcome.status is AbortStatus.ABORTED
        await broker.wait_all()
        result = await task.wait_result(timeout=5)
        assert isinstance(result.error, TaskAbortedError), result
        assert sorted(ended) == (
            ["copy 0 stopped"] if abort_between else ["copy 0 stopped", "copy 1 stopped"]
        )
        assert entered.empty()
        assert middleware.worker is not None
        assert middleware.worker.running == {}
        with anyio.fail_after(5):  # the finish is written behind (it rides with the next call)
            while await middleware.backend.find_running("redelivered-id") is not None:
                await asyncio.sleep(0.01)
    finally:
        await broker.shutdown()


@pytest.mark.parametrize("level", [logging.INFO, logging.WARNING])
async def test_an_abort_is_one_info_line_or_nothing_below_info(
    setup, caplog: pytest.LogCaptureFixture, level: int
) -> None:
    """taskiq logs a failed task as an ERROR with a traceback; an aborted one becomes one INFO
    line, which a worker run at ``--log-level WARNING`` does not write at all."""
    _broker, probe, sleeper, _, _ = setup
    caplog.set_level(level, logger="taskiq.receiver.receiver")
    task = await sleeper.kiq()
    await probe.started.wait()
    assert (await task.abort()).status is AbortStatus.ABORTED
    await task.wait_result(timeout=5)
    ours = [r for r in caplog.records if f"aborted task {task.task_id}" in r.getMessage()]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no traceback
    if level == logging.INFO:
        assert [(r.levelname, r.exc_info) for r in ours] == [("INFO", None)], ours
    else:
        assert ours == []
