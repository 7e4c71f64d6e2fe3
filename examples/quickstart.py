"""The quick start: a worker runs a long task, another process aborts it.

Run it against your Redis, from a clone of this repository::

    export REDIS_URL=redis://localhost:6379/0
    taskiq worker examples.quickstart:broker     # one shell: the worker
    python3 -m examples.quickstart               # another: start a task, abort it
"""

import asyncio
import os

from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from taskiq_abort import AbortMiddleware, TaskAbortedError

url = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
broker = (
    RedisStreamBroker(url)
    .with_result_backend(RedisAsyncResultBackend(url))
    .with_middlewares(AbortMiddleware(url))
)


@broker.task(task_name="crunch")  # one name, imported or run as __main__
async def crunch(seconds: float) -> str:
    await asyncio.sleep(seconds)  # an abort cancels the task at its next await
    return "done"


async def main() -> None:
    await broker.startup()
    task = await crunch.kiq(3600)
    await asyncio.sleep(1)  # time for the worker to start it (else it is revoked: never runs)
    outcome = await task.abort(reason="user pressed stop")
    print(outcome.status.value, "by", outcome.worker)  # aborted by <the worker's id>
    result = await task.wait_result(timeout=5)
    assert isinstance(result.error, TaskAbortedError)  # the stored result
    print(result.error)  # task ... was aborted: user pressed stop
    await broker.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
