"""A test app whose tasks keep taskiq's default names (``tests.names_app:crunch``), as users'
apps do, plus an explicitly named ``other:crunch`` to make the bare name ambiguous.

Workers load ``tests.names_app:broker``.
"""

from __future__ import annotations

import asyncio
import os

from taskiq import Context, TaskiqDepends

from tests.app import emit, make_broker

if "TASKIQ_ABORT_TEST_URL" in os.environ:
    broker = make_broker(
        os.environ["TASKIQ_ABORT_TEST_URL"], os.environ["TASKIQ_ABORT_TEST_PREFIX"]
    )

    @broker.task
    async def crunch(context: Context = TaskiqDepends()) -> str:
        try:
            await emit(context, "started")
            await asyncio.sleep(3600)
        finally:
            await emit(context, "finally")
        return "unreachable"

    @broker.task(task_name="other:crunch")
    async def other_crunch(context: Context = TaskiqDepends()) -> str:
        await emit(context, "started")
        await asyncio.sleep(3600)
        return "unreachable"
