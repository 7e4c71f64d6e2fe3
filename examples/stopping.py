"""Ways to stop a task: graceful then forced, a sync loop that never checks, many at once.

    python3 -m examples.stopping

In one process (``InMemoryBroker`` and the in-process abort backend), so it needs no Redis;
with ``AbortMiddleware("redis://...")`` on a real broker the calls are the same.
"""

from __future__ import annotations

import asyncio

from taskiq import InMemoryBroker, TaskiqDepends

from taskiq_abort import AbortMiddleware, AbortToken, abort_many

broker = InMemoryBroker().with_middlewares(AbortMiddleware(interrupt_threads=True))
running: dict[str, asyncio.Event] = {}
loops: list[asyncio.AbstractEventLoop] = []  # main()'s, for the sync task's thread to call into


def started(name: str) -> asyncio.Event:
    return running.setdefault(name, asyncio.Event())


@broker.task
async def export(job: str, token: AbortToken = TaskiqDepends()) -> str:
    """Stops on its own terms when asked: saves a checkpoint, then ends as aborted."""
    started(job).set()
    for page in range(1_000_000):
        if token.is_aborted:
            print(f"   {job}: asked to stop at page {page}, checkpoint saved")
            token.raise_if_aborted()
        await asyncio.sleep(0.01)
    return "done"


@broker.task
async def stubborn(job: str) -> str:
    """Ignores its token: the end of the grace period cancels it."""
    started(job).set()
    await asyncio.sleep(3600)
    return "never"


@broker.task
def crunch(job: str) -> int:
    """A sync loop that never checks a token: interrupt_threads stops its thread."""
    loops[0].call_soon_threadsafe(started(job).set)
    total = 0
    while True:
        total += 1


async def main() -> None:
    loops.append(asyncio.get_running_loop())
    await broker.startup()
    try:
        print("1) Graceful: the token is set, the task stops on its own")
        task = await export.kiq("export-1")
        await started("export-1").wait()
        outcome = await task.abort(reason="maintenance", grace=30)
        print(f"   -> {outcome.status}, forced={outcome.forced}")

        print("2) Graceful, then forced: it ignored its token for 0.2 s")
        task = await stubborn.kiq("stubborn-1")
        await started("stubborn-1").wait()
        outcome = await task.abort(grace=0.2)
        print(f"   -> {outcome.status}, forced={outcome.forced}")

        print("3) A sync loop that never checks, interrupted in its thread")
        task = await crunch.kiq("crunch-1")
        await started("crunch-1").wait()
        outcome = await task.abort()
        result = await task.wait_result(timeout=5)
        print(f"   -> {outcome.status}; stored result: {type(result.error).__name__}")

        print("4) Many at once: one call, one message per worker holding some of them")
        tasks = [await stubborn.kiq(f"batch-{i}") for i in range(5)]
        for i in range(5):
            await started(f"batch-{i}").wait()
        outcomes = await abort_many(broker, tasks, reason="batch cancelled")
        print(f"   -> {[str(o.status) for o in outcomes]}")
    finally:
        await broker.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
