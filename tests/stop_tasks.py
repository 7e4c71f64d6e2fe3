"""Tasks of the grace-period and thread-interrupt tests (``tests/test_grace.py``), defined on
the test app's broker by ``tests.app``."""

from __future__ import annotations

import asyncio
import threading
import time

from taskiq import AsyncBroker, Context, TaskiqDepends

from taskiq_abort import AbortToken, TaskInterrupted


def define_stop_tasks(broker: AsyncBroker) -> None:
    from tests.app import emit, emit_sync

    @broker.task(task_name="graceful")
    async def graceful(
        mode: str, token: AbortToken = TaskiqDepends(), context: Context = TaskiqDepends()
    ) -> str:
        """Stops on its own terms once its token is set: ``raise`` through the token,
        ``return`` a partial result, or ``ignore`` it (then only the grace period's end stops
        it)."""
        await emit(context, "started")
        if mode == "ignore":
            try:
                await asyncio.sleep(60)
            finally:
                await emit(context, f"cancelled, token set: {token.is_aborted}")
            return "unreachable"
        await token.wait()  # with a grace period, the abort sets it and cancels nothing
        await emit(context, "token set")
        if mode == "raise":
            token.raise_if_aborted()
        return "partial"

    @broker.task(task_name="spin")
    def spin(context: Context = TaskiqDepends()) -> int:
        """A pure-Python loop that never looks at a token."""
        emit_sync(context, "started")
        emit_sync(context, f"thread {threading.get_ident()}")
        count = 0
        while True:
            count += 1

    @broker.task(task_name="catches_interrupt")
    def catches_interrupt(context: Context = TaskiqDepends()) -> str:
        """Catches the thread interrupt and returns a result of its own."""
        try:
            # Inside the try: the test aborts once it sees this, and the interrupt may land
            # while the report is still reading its reply.
            emit_sync(context, "started")
            while True:
                pass
        except TaskInterrupted:
            emit_sync(context, "caught")
        return "returned after the interrupt"

    @broker.task(task_name="sleepy")
    def sleepy(seconds: float, context: Context = TaskiqDepends()) -> str:
        """Blocked in a C call (``time.sleep``): an interrupt lands once it returns."""
        emit_sync(context, "started")
        time.sleep(seconds)
        total = 0
        for step in range(10**9):  # Python bytecode after the sleep: where it lands
            total += step
        emit_sync(context, "ran on")
        return f"slept, then counted to {total}"

    @broker.task(task_name="which_thread")
    def which_thread() -> int:
        return threading.get_ident()

    @broker.task(task_name="limited", time_limit=0.5)
    async def limited(context: Context = TaskiqDepends()) -> str:
        """A time limit set by the decorator."""
        try:
            await emit(context, "started")
            await asyncio.sleep(60)
        finally:
            await emit(context, "finally")
        return "unreachable"

    @broker.task(task_name="limited_retried", retry_on_error=True, max_retries=2, time_limit=0.3)
    async def limited_retried(context: Context = TaskiqDepends()) -> str:
        """Retried on errors, but not after its time limit."""
        await emit(context, "started")
        await asyncio.sleep(60)
        return "unreachable"

    @broker.task(
        task_name="limited_retried_opt_in",
        retry_on_error=True,
        max_retries=2,
        time_limit=0.3,
        retry_on_time_limit=True,
    )
    async def limited_retried_opt_in(context: Context = TaskiqDepends()) -> str:
        """Opted in: retried after its time limit too."""
        await emit(context, "started")
        await asyncio.sleep(60)
        return "unreachable"
