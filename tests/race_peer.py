"""A second aborting process for tests/test_abort_race.py, as a CLI or a dashboard next to the
application would be: ``python -m tests.race_peer URL PREFIX``.

It says ``ready`` once its broker is up, then reads ``<how> <task id> <moment>`` lines (``how``:
``by_id`` or ``in_bulk``; ``moment``: a ``time.perf_counter()`` value, one clock for every
process of the machine), aborts the task at that moment and answers ``<status or error> <started>``.
"""

from __future__ import annotations

import asyncio
import sys
import time

from taskiq import AsyncBroker

from taskiq_abort import TaskiqAbortError, abort, abort_many
from tests.app import make_broker


async def said(how: str, broker: AsyncBroker, task_id: str) -> tuple[str, float]:
    """What an abort of ``task_id`` said (``how``: ``by_id`` or ``in_bulk``): its status, or
    the name of its error; and how long it took."""
    started = time.perf_counter()
    try:
        if how == "by_id":
            outcome = await abort(broker, task_id)
        else:
            (outcome,) = await abort_many(broker, [task_id])
    except TaskiqAbortError as exc:
        return type(exc).__name__, time.perf_counter() - started
    return outcome.status.value, outcome.elapsed


async def main(url: str, prefix: str) -> None:
    broker = make_broker(url, prefix, "list")
    await broker.startup()
    loop = asyncio.get_running_loop()
    try:
        await abort(broker, "race-peer-warm-up")  # connections and scripts ready
        print("ready", flush=True)
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            how, task_id, moment = line.split()
            while time.perf_counter() < float(moment):
                pass  # nothing else runs here: spin, to start within microseconds
            started = time.perf_counter()
            status, _ = await said(how, broker, task_id)
            print(status, started, flush=True)
    finally:
        await broker.shutdown()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
