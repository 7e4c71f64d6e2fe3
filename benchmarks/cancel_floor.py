"""The cancellation floors' worker side: the least any abort of a running task must do.

``CancelFloor`` is a middleware of the floor worker (``BENCH_ABORT=floor``, no
``AbortMiddleware``): ``pre_execute`` remembers ``asyncio.current_task()`` by task id, and a
subscriber on ``<prefix>:floor`` (read with ``PubSub.get_message``, as the abort listener reads)
takes two messages:

- ``a <task id>``: ``Task.cancel()`` on that task, nothing else (floor (a): to the body's
  ``except``);
- ``b <task id> <reply channel>``: the same, then, once the body's ``except`` has run, one
  pipelined round trip that SETs a result and PUBLISHes a reply (floor (b): the least a
  confirmed outcome can cost: nothing recorded before, the reply after the result);
- ``c <task id> <reply channel>``: ``Task.cancel()``, then the reply is PUBLISHed in
  ``post_save``, once taskiq has stored the task's result through its result backend (floor
  (b'): the least a confirmed outcome costs when taskiq writes the result, as it does for
  ``AbortMiddleware``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import redis.asyncio as aredis
from taskiq import TaskiqMessage, TaskiqMiddleware


def channel(prefix: str) -> str:
    return f"{prefix}:floor"


def _not_a_cancellation(record: logging.LogRecord) -> bool:
    """taskiq logs a cancelled task's traceback; ``AbortMiddleware`` demotes the line of an
    aborted one to INFO (not written at the workers' WARNING level): the floor writes none."""
    exc = record.exc_info[1] if record.exc_info else None
    return not isinstance(exc, asyncio.CancelledError)


class CancelFloor(TaskiqMiddleware):
    def __init__(self, url: str, prefix: str, result_prefix: str) -> None:
        super().__init__()
        self.url, self.prefix, self.result_prefix = url, prefix, result_prefix
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self.after_save: dict[str, str] = {}  # task id -> reply channel (floor (b'))
        self.out: aredis.Redis | None = None
        self.listener: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        if self.broker.is_worker_process:
            logging.getLogger("taskiq.receiver.receiver").addFilter(_not_a_cancellation)
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

    async def post_save(self, message: TaskiqMessage, result: Any) -> None:
        self.tasks.pop(message.task_id, None)
        reply = self.after_save.pop(message.task_id, None)
        if reply is not None and self.out is not None:
            await self.out.publish(reply, message.task_id)

    async def _listen(self) -> None:
        sub = aredis.Redis.from_url(self.url)
        out = self.out = aredis.Redis.from_url(self.url)
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
            if kind == "c":
                self.after_save[task_id] = reply[0]
            task.cancel()
            if kind == "b":
                # The cancelled task's step was scheduled by cancel(), before this one resumes:
                # the body's `except` has run by then.
                await asyncio.sleep(0)
                async with out.pipeline(transaction=False) as pipe:
                    pipe.set(f"{self.result_prefix}:{task_id}", "aborted", ex=60)
                    pipe.publish(reply[0], task_id)
                    await pipe.execute()
