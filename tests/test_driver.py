"""How an abort reaches an async body, in one process (``InMemoryBroker``): clean-up with its
own timeouts, a body that keeps the exception or refuses every cancellation, and aborts racing
an awaited operation's completion. Where asyncio has an answer, the body under plain
``Task.cancel()`` is the reference."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import random
import sys
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import pytest
from taskiq import AsyncBroker, InMemoryBroker

from taskiq_abort import AbortMiddleware, AbortStatus, TaskAbortedError
from taskiq_abort._worker.body import INTERVAL, PROMPT
from tests.faultkit import started

pytestmark = pytest.mark.anyio
Body = Callable[[asyncio.Event, list[str]], Awaitable[Any]]


def _broker(mode: str) -> AbstractAsyncContextManager[AsyncBroker]:
    return started(InMemoryBroker().with_middlewares(AbortMiddleware(cancel_mode=mode)))  # type: ignore[arg-type]


async def _aborted(mode: str, body: Body) -> tuple[str, Any, list[str]]:
    """Run ``body`` as a task, abort it once it has started: (status, result, its log)."""
    started, log = asyncio.Event(), []
    async with _broker(mode) as broker:

        @broker.task(task_name="body")
        async def task() -> Any:
            return await body(started, log)

        handle = await task.kiq()
        await started.wait()
        outcome = await handle.abort(timeout=5)  # type: ignore[attr-defined]
        result = await handle.wait_result(timeout=5)
    return outcome.status.value, result.error or result.return_value, log


async def _cancelled(body: Body) -> tuple[str, Any, list[str]]:
    """The same body under plain ``Task.cancel()``: ("cancelled"/"finished", result, log)."""
    started, log = asyncio.Event(), []
    task = asyncio.ensure_future(body(started, log))
    await started.wait()
    task.cancel()
    try:
        return "finished", await task, log
    except asyncio.CancelledError as exc:
        return "cancelled", exc, log


async def _with_own_timeout(kind: str) -> None:
    """Something that outlasts its own timeout (anyio's, or asyncio's from Python 3.11)."""
    if kind == "anyio":
        with anyio.move_on_after(0.01):
            await asyncio.sleep(30)
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(0.01):  # type: ignore[attr-defined,unused-ignore]
            await asyncio.sleep(30)


@pytest.mark.parametrize(
    "kind",
    [
        "anyio",
        pytest.param(
            "asyncio", marks=pytest.mark.skipif(sys.version_info < (3, 11), reason="3.11+")
        ),
    ],
)
async def test_a_clean_ups_own_timeout_is_not_taken_for_the_abort(kind: str) -> None:
    """The clean-up after the abort has a timeout of its own, which fires: the rest of the
    clean-up runs as under plain ``Task.cancel()`` (3.11's ``asyncio.timeout`` does not turn
    its own cancel into ``TimeoutError`` in a task being cancelled: there neither runs)."""

    async def body(started: asyncio.Event, log: list[str]) -> str:
        started.set()
        try:
            await asyncio.sleep(60)
        finally:
            await _with_own_timeout(kind)
            log.append("timed out")
            await asyncio.sleep(0)
            await asyncio.sleep(0.01)
            log.append("clean-up done")
        return "unreachable"

    plain_status, _, plain_log = await _cancelled(body)
    status, error, log = await _aborted("edge", body)
    assert plain_status == "cancelled"
    assert status == "aborted" and isinstance(error, TaskAbortedError)
    assert log == plain_log
    if kind == "anyio" or sys.version_info >= (3, 12):
        assert log == ["timed out", "clean-up done"]


@pytest.mark.parametrize("driver", ["edge", "level", "plain"])
async def test_a_body_that_keeps_the_exception_and_runs_on_is_not_reported_stopped(
    driver: str,
) -> None:
    """It catches each cancellation, keeps it in a local and carries on to its end: that is
    its own result, not an abort (plain ``Task.cancel()`` lets it finish too)."""

    async def body(started: asyncio.Event, log: list[str]) -> str:
        saved: BaseException | None = None
        started.set()
        for seconds in (60, 0.01, 0.01):
            try:
                await asyncio.sleep(seconds)
            except asyncio.CancelledError as exc:
                saved = exc
        log.append(f"end, holding {type(saved).__name__}")
        return "ran to its end"

    if driver == "plain":
        status, result, log = await _cancelled(body)
    else:
        status, result, log = await _aborted(driver, body)
    assert (status, result) == ("finished", "ran to its end"), log
    assert len(log) == 1


@pytest.mark.parametrize("mode", ["edge", "level"])
async def test_a_body_refusing_every_cancellation_is_bounded_and_unconfirmed(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="taskiq_abort")
    loop = asyncio.get_running_loop()
    started, give_up = asyncio.Event(), asyncio.Event()
    catches, ticks = [0], [0]
    async with _broker(mode) as broker:

        @broker.task(task_name="stubborn")
        async def stubborn() -> str:
            started.set()
            while True:
                try:
                    await asyncio.sleep(1)
                except asyncio.CancelledError:
                    catches[0] += 1
                    if give_up.is_set():
                        raise

        @broker.task(task_name="ticker")
        async def ticker() -> None:
            while not give_up.is_set():
                ticks[0] += 1
                await asyncio.sleep(0.01)

        other = await ticker.kiq()
        handle = await stubborn.kiq()
        await started.wait()
        t0 = loop.time()
        outcome = await handle.abort(timeout=1.5)  # type: ignore[attr-defined]
        elapsed, caught, ticked = loop.time() - t0, catches[0], ticks[0]
        give_up.set()  # caught at its next delivery: then it stops
        final = await handle.abort(timeout=5)  # type: ignore[attr-defined]
        result = await handle.wait_result(timeout=5)
        await other.wait_result(timeout=5)
    assert outcome.status is AbortStatus.UNCONFIRMED, outcome
    assert 0 < caught <= PROMPT + math.ceil(elapsed / INTERVAL) + 1, (caught, elapsed)
    assert ticked > 0  # other tasks kept running
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and handle.task_id in warnings[0], warnings
    assert final.status is AbortStatus.ABORTED, final
    assert isinstance(result.error, TaskAbortedError)


@pytest.mark.parametrize("mode", ["edge", "level"])
async def test_aborts_racing_an_awaited_operations_completion_never_lie(mode: str) -> None:
    """The abort lands just before, as, or just after the future the body awaits completes
    (the order shifts by a random number of loop iterations each round). ``aborted`` must mean
    the body stopped at that await, ``finished`` that it ran its last line."""
    rounds, rng = 300, random.Random(18)
    counts: collections.Counter[str] = collections.Counter()
    lies: list[tuple[int, str, object]] = []
    futures: dict[int, asyncio.Future[None]] = {}
    started: dict[int, asyncio.Event] = {}
    ran: set[int] = set()
    async with _broker(mode) as broker:

        @broker.task(task_name="racer")
        async def racer(i: int) -> str:
            started[i].set()
            await futures[i]
            ran.add(i)
            return "done"

        loop = asyncio.get_running_loop()
        for i in range(rounds):
            futures[i], started[i] = loop.create_future(), asyncio.Event()
            handle = await racer.kiq(i)
            await started[i].wait()
            shift = rng.randrange(-2, 6)  # > 0: the abort starts first, by that many iterations
            if shift <= 0:
                futures[i].set_result(None)
            for _ in range(abs(shift)):
                await asyncio.sleep(0)
            aborting = asyncio.ensure_future(handle.abort(timeout=5))  # type: ignore[attr-defined]
            for _ in range(shift):
                await asyncio.sleep(0)
            if not futures[i].done():  # else the abort cancelled it: the await raised
                futures[i].set_result(None)
            status = (await aborting).status.value
            result = await handle.wait_result(timeout=5)
            counts[status] += 1
            truth = (status == "finished" and i in ran and result.return_value == "done") or (
                status == "aborted" and i not in ran and isinstance(result.error, TaskAbortedError)
            )
            if not truth:
                lies.append((i, status, result.error or result.return_value))
    print(f"\n{mode}: {rounds} rounds {dict(counts)}; lies {len(lies)}")
    assert not lies, (len(lies), lies[:5])
    assert counts["aborted"] and counts["finished"], counts  # the race did happen


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.TaskGroup: 3.11+")
@pytest.mark.parametrize("mode", ["edge", "level"])
async def test_an_abort_inside_a_task_group_is_a_cancellation_not_an_error(mode: str) -> None:
    """3.11/3.12's ``TaskGroup`` propagates only an exception whose type *is*
    ``CancelledError``; anything else it wraps in a ``BaseExceptionGroup``, which would make an
    aborted body look like one that failed on its own (``finished``, and retried)."""

    async def body(started: asyncio.Event, log: list[str]) -> str:
        async def child() -> None:
            try:
                await asyncio.sleep(60)
            finally:
                log.append("child stopped")

        async with asyncio.TaskGroup() as group:  # type: ignore[attr-defined,unused-ignore]
            group.create_task(child())
            started.set()
            await asyncio.sleep(60)
        log.append("last line")
        return "unreachable"

    plain_status, plain_error, plain_log = await _cancelled(body)
    status, error, log = await _aborted(mode, body)
    assert (plain_status, type(plain_error)) == ("cancelled", asyncio.CancelledError)
    assert status == "aborted" and isinstance(error, TaskAbortedError), (status, error)
    assert log == plain_log == ["child stopped"]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.TaskGroup: 3.11+")
async def test_a_task_group_waiting_for_its_childrens_clean_up_is_not_called_stubborn(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """In level mode every await of the body is cancelled, and a ``TaskGroup`` catches each
    cancellation while it waits for its children to finish their clean-up: that is not a body
    that carries on, and no warning may say so."""

    async def body(started: asyncio.Event, log: list[str]) -> str:
        async def child() -> None:
            try:
                await asyncio.sleep(60)
            finally:
                for _ in range(20):
                    await asyncio.sleep(0)
                log.append("child cleaned up")

        async with asyncio.TaskGroup() as group:  # type: ignore[attr-defined,unused-ignore]
            for _ in range(3):
                group.create_task(child())
            started.set()
            await asyncio.sleep(60)
        return "unreachable"

    with caplog.at_level(logging.WARNING, logger="taskiq_abort"):
        status, error, log = await _aborted("level", body)
    assert status == "aborted" and isinstance(error, TaskAbortedError), (status, error)
    assert log == ["child cleaned up"] * 3
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
