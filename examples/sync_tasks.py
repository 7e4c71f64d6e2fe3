"""A sync task that never checks for an abort, interrupted in its thread.

Run it against your Redis, from a clone of this repository::

    export REDIS_URL=redis://localhost:6379/0
    taskiq worker examples.sync_tasks:broker     # one shell: the worker
    python3 -m examples.sync_tasks               # another: start the loop, abort it
"""

import asyncio
import os

from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend

from taskiq_abort import AbortMiddleware, TaskAbortedError

url = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
# socket_timeout=None: the list broker waits for tasks in a blocking read, which redis-py 8's
# default 5 s socket timeout would end with an error that restarts the idle worker.
broker = (
    ListQueueBroker(url, socket_timeout=None)
    .with_result_backend(RedisAsyncResultBackend(url))
    .with_middlewares(AbortMiddleware(url, interrupt_threads=True))
)


@broker.task(task_name="crunch")  # one name, imported or run as __main__
def crunch(n: int) -> int:  # no token: an abort interrupts the thread that runs it
    return sum(i * i for i in range(n))


async def main() -> None:
    await broker.startup()
    task = await crunch.kiq(10**12)  # hours of work
    await asyncio.sleep(1)  # time for the worker to start it (else it is revoked: never runs)
    outcome = await task.abort(reason="too slow")
    print(outcome.status.value)  # aborted
    result = await task.wait_result(timeout=5)
    assert isinstance(result.error, TaskAbortedError)
    await broker.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
