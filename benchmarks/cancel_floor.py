"""The cancellation floors' worker side: the least any abort of a running task must do.

``CancelFloor`` is a middleware of the floor worker (``BENCH_ABORT=floor``, no
``AbortMiddleware``): ``pre_execute`` remembers ``asyncio.current_task()`` by task id, and a
subscriber on ``<prefix>:floor`` (read with ``PubSub.get_message``, as the abort listener reads)
takes two messages:

- ``a <task id>``: ``Task.cancel()`` on that task, nothing else (floor (a): to the body's
  ``except``);
- ``b <task id> <reply channel>``: the same, then, once the body's ``except`` has run, one
  pipelined round trip that SETs a result and PUBLISHes a reply (floor (b): the least a
  confirmed outcome can cost: nothing recorded before, the reply after the result).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import redis.asyncio as aredis
from taskiq import TaskiqMessage, TaskiqMiddleware


def channel(prefix: str) -> str:
    return f"{prefix}:floor"


class CancelFloor(TaskiqMiddleware):
    def __init__(self, url: str, prefix: str, result_prefix: str) -> None:
        super().__init__()
        self.url, self.prefix, self.result_prefix = url, prefix, result_prefix
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self.listener: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        if self.broker.is_worker_process:
            self.listener = asyncio.create_task(self._listen())

    async def shutdown(self) -> None:
        if self.listener is not None:
            self.listener.cancel()
            with contextlib.suppress(BaseException):
                await self.listener

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        task = asyncio.current_task()
        assert task is not None
        self.tasks[message.task_id] = task
        return message

    def post_save(self, message: TaskiqMessage, result: Any) -> None:
        self.tasks.pop(message.task_id, None)

    async def _listen(self) -> None:
        sub = aredis.Redis.from_url(self.url)
        out = aredis.Redis.from_url(self.url)
        await out.ping()  # connected before the first sample
        pubsub = sub.pubsub()
        await pubsub.subscribe(channel(self.prefix))
        while True:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=60)
            if msg is None or msg.get("type") != "message":
                continue
            kind, task_id, *reply = msg["data"].decode().split()
            task = self.tasks.get(task_id)
            if task is None:
                continue
            task.cancel()
            if kind == "b":
                # The cancelled task's step was scheduled by cancel(), before this one resumes:
                # the body's `except` has run by then.
                await asyncio.sleep(0)
                async with out.pipeline(transaction=False) as pipe:
                    pipe.set(f"{self.result_prefix}:{task_id}", "aborted", ex=60)
                    pipe.publish(reply[0], task_id)
                    await pipe.execute()
