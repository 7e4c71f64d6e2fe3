"""The test app of the web tests: ``tests.app``'s broker plus a task with a hostile name.

Workers load ``tests.web_app:broker``; the dashboard must show the name as text.
"""

from __future__ import annotations

import asyncio
import os

from taskiq import Context, TaskiqDepends

from tests.app import emit, make_broker

HOSTILE_NAME = (
    "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>"
)

if "TASKIQ_ABORT_TEST_URL" in os.environ:
    broker = make_broker(
        os.environ["TASKIQ_ABORT_TEST_URL"],
        os.environ["TASKIQ_ABORT_TEST_PREFIX"],
        abort_url=os.environ.get("TASKIQ_ABORT_TEST_ABORT_URL") or None,
        index_labels=("tenant",),  # the dashboard's labels column and rules panel
    )

    @broker.task(task_name=HOSTILE_NAME)
    async def hostile(context: Context = TaskiqDepends()) -> str:
        await emit(context, "started")
        await asyncio.sleep(3600)
        return "unreachable"
