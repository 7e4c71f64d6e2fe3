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
  ``AbortMiddleware``);
- ``d <task id> <reply channel>``: as ``c``, but the reply comes from a script that first
  records the outcome in the request's hash (:data:`CONFIRM_FLOOR`): with the client's
  :data:`REQUEST_FLOOR`, floor (b''), the least a *recorded* confirmed outcome costs.

The client sends ``a`` and ``d`` either with a bare ``PUBLISH`` or from
:data:`REQUEST_FLOOR`, a script that records the request before it publishes (floors (a'')
and (b'')): what "durable before fast" costs by itself, with nothing else of ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import redis.asyncio as aredis
from taskiq import TaskiqMessage, TaskiqMiddleware

# The least a durable request is: one hash written on the Redis clock, with a TTL, and the
# message published in the same atomic call (KEYS: the request hash; ARGV: channel, message).
REQUEST_FLOOR = """
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'at', t[1] * 1000 + math.floor(t[2] / 1000), 'by', 'floor')
redis.call('PEXPIRE', KEYS[1], 600000)
return redis.call('PUBLISH', ARGV[1], ARGV[2])
"""

# The least a recorded confirmation is: the outcome written to the request's hash, then the
# reply published, atomically (KEYS: the request hash; ARGV: reply channel, message).
CONFIRM_FLOOR = """
redis.call('HSET', KEYS[1], 'outcome', 'aborted')
return redis.call('PUBLISH', ARGV[1], ARGV[2])
"""


def channel(prefix: str) -> str:
    return f"{prefix}:floor"


def request_key(prefix: str, task_id: str) -> str:
    return f"{prefix}:req:{task_id}"


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
        self.after_save: dict[str, tuple[str, bool]] = {}  # id -> (reply channel, recorded)
        self.out: aredis.Redis | None = None
        self.confirm: Any = None  # CONFIRM_FLOOR on ``out``
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
        if reply is None or self.out is None:
            return
        channel_, recorded = reply
        if recorded:
            key = request_key(self.prefix, message.task_id)
            await self.confirm(keys=[key], args=[channel_, message.task_id])
        else:
            await self.out.publish(channel_, message.task_id)

    async def _listen(self) -> None:
        sub = aredis.Redis.from_url(self.url)
        out = self.out = aredis.Redis.from_url(self.url)
        self.confirm = out.register_script(CONFIRM_FLOOR)
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
            if kind in ("c", "d"):
                self.after_save[task_id] = (reply[0], kind == "d")
            task.cancel()
            if kind == "b":
                # The cancelled task's step was scheduled by cancel(), before this one resumes:
                # the body's `except` has run by then.
                await asyncio.sleep(0)
                async with out.pipeline(transaction=False) as pipe:
                    pipe.set(f"{self.result_prefix}:{task_id}", "aborted", ex=60)
                    pipe.publish(reply[0], task_id)
                    await pipe.execute()
