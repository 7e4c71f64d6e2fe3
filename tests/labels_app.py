"""The app of the abort-by-labels and cascade tests (``tests/test_abort_where_worker.py``): a
RedisStreamBroker or RabbitMQ (taskiq-aio-pika) broker, ``AbortMiddleware`` indexing the
``tenant`` label, and tasks that report to Redis (``tests.app.emit``) and hold until the test
releases them (no sleeps: a test waits on events and releases on its own schedule).

Workers load ``tests.labels_app:broker``, built from the environment :func:`env` writes; the
queue is named after the prefix and ``TASKIQ_ABORT_LABELS_QUEUE``, so that a test can keep
tasks queued (on a queue no worker listens to yet).
"""

from __future__ import annotations

import os
from typing import Any

from taskiq import AsyncBroker, Context, TaskiqDepends
from taskiq_aio_pika import AioPikaBroker, Exchange, Queue
from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend, RedisStreamBroker

from taskiq_abort import AbortMiddleware
from tests.app import emit, marks
from tests.broker_app import DEFAULT_AMQP, RabbitNames

AMQP_URL = os.environ.get("TASKIQ_ABORT_TEST_AMQP_URL", DEFAULT_AMQP)
INDEX = ("tenant",)


def env(kind: str, url: str, prefix: str, queue: str = "main", slots: int = 10) -> dict[str, str]:
    """``slots``: RabbitMQ's prefetch (``qos``), to match ``--max-async-tasks``: a worker then
    holds no more tasks than it runs (the others stay queued where another worker can take
    them)."""
    return {
        "TASKIQ_ABORT_LABELS_KIND": kind,
        "TASKIQ_ABORT_LABELS_SLOTS": str(slots),
        "TASKIQ_ABORT_LABELS_QUEUE": queue,
        "TASKIQ_ABORT_TEST_URL": url,
        "TASKIQ_ABORT_TEST_PREFIX": prefix,
    }


def rabbit_names(prefix: str, queue: str) -> RabbitNames:
    return RabbitNames.of(f"{prefix}.{queue}")


def make_labels_broker(
    kind: str, url: str, prefix: str, queue: str = "main", slots: int = 10
) -> AsyncBroker:
    inner: AsyncBroker
    if kind == "list":  # BRPOP: one message at a time, never more than the worker runs
        inner = ListQueueBroker(url, queue_name=f"{prefix}:{queue}", socket_timeout=None)
    elif kind == "stream":
        inner = RedisStreamBroker(
            url, queue_name=f"{prefix}:{queue}", consumer_group_name=f"{prefix}:{queue}:group"
        )
    elif kind == "rabbitmq":
        names = rabbit_names(prefix, queue)
        inner = AioPikaBroker(
            AMQP_URL,
            qos=slots,
            exchange=Exchange(name=names.exchange),
            task_queues=[Queue(name=names.tasks)],
            delay_queue=Queue(name=names.delay),
            dead_letter_queue=Queue(name=names.dead),
        )
    else:
        raise ValueError(kind)
    broker = inner.with_result_backend(
        RedisAsyncResultBackend(url, prefix_str=f"{prefix}:result")
    ).with_middlewares(AbortMiddleware(url, prefix=prefix, index_labels=INDEX))
    _define(broker)
    return broker


async def _hold(context: Context) -> None:
    """Until the test pushes to ``<prefix>:release:<task id>`` (or ``<prefix>:release-all``)."""
    prefix = os.environ["TASKIQ_ABORT_TEST_PREFIX"]
    tid = context.message.task_id
    keys = [f"{prefix}:release:{tid}"]
    while not await marks().blpop(keys, timeout=1):
        if await marks().exists(f"{prefix}:release-all"):
            return


def _define(broker: AsyncBroker) -> None:
    @broker.task(task_name="gate")
    async def gate(context: Context = TaskiqDepends()) -> str:
        """Reports where it runs, holds until released, then reports its end."""
        prefix = os.environ["TASKIQ_ABORT_TEST_PREFIX"]
        await marks().hset(f"{prefix}:pids", context.message.task_id, os.getpid())
        try:
            await emit(context, "started")
            await _hold(context)
            await emit(context, "ended")
        finally:
            await emit(context, "finally")
        return "released"

    @broker.task(task_name="quick")
    async def quick(context: Context = TaskiqDepends()) -> str:
        await emit(context, "started")
        await emit(context, "ended")
        return "ran"

    @broker.task(task_name="fan")
    async def fan(widths: list[int], context: Context = TaskiqDepends()) -> str:
        """A node of a fan-out tree: kicks ``widths[0]`` children (each with ``widths[1:]``),
        lists their ids under the tree's root (``<prefix>:tree:<root id>``), then holds until
        released."""
        prefix = os.environ["TASKIQ_ABORT_TEST_PREFIX"]
        root = context.message.labels.get("abort_root") or context.message.task_id
        await emit(context, "started")
        for _ in range(widths[0] if widths else 0):
            child = await fan.kiq(widths[1:])
            await marks().rpush(f"{prefix}:tree:{root}", child.task_id)
        await _hold(context)
        await emit(context, "ended")
        return "done"


def _from_env() -> AsyncBroker:
    return make_labels_broker(
        os.environ["TASKIQ_ABORT_LABELS_KIND"],
        os.environ["TASKIQ_ABORT_TEST_URL"],
        os.environ["TASKIQ_ABORT_TEST_PREFIX"],
        os.environ["TASKIQ_ABORT_LABELS_QUEUE"],
        int(os.environ["TASKIQ_ABORT_LABELS_SLOTS"]),
    )


broker: Any = _from_env() if "TASKIQ_ABORT_LABELS_KIND" in os.environ else None
