"""A worker's confirmations: how each abort ended, recorded and replied to in batched calls."""

from __future__ import annotations

import asyncio
import logging

from taskiq_abort.backends.base import AbortBackend, Confirmation
from taskiq_abort.errors import TaskiqAbortError

logger = logging.getLogger("taskiq_abort")


class Confirmations:
    """A lone confirmation goes at once; those that come while one call is in flight (a bulk
    abort ending hundreds of tasks) join the next call, one for all of them, as starts do in
    ``WorkerSide._flush``."""

    def __init__(self, backend: AbortBackend, worker_id: str) -> None:
        self.backend = backend
        self.worker_id = worker_id
        self.tasks: set[asyncio.Task[None]] = set()  # calls in tasks of their own
        self._queued: list[tuple[Confirmation, asyncio.Future[None]]] = []
        self._busy = False  # a confirmation call is in flight

    async def confirm(self, confirmation: Confirmation) -> None:
        """Record it and reply to its aborters; never raises (a failure is logged)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.append((confirmation, done))
        if not self._busy:
            self._busy = True
            try:
                await self._round()
            finally:
                if self._queued:  # came meanwhile: the next call, in a task of its own
                    self.track(asyncio.get_running_loop().create_task(self._drain()))
                else:
                    self._busy = False
        await done

    async def _round(self) -> None:
        batch, self._queued = self._queued, []
        try:
            await self.backend.confirm_many(self.worker_id, [item for item, _ in batch])
        except Exception as exc:  # never into the task's post_save
            ids = ", ".join(item.task_id for item, _ in batch[:3])
            more = f" and {len(batch) - 3} more" if len(batch) > 3 else ""
            log = logger.warning if isinstance(exc, TaskiqAbortError) else logger.exception
            log("taskiq-abort: could not confirm abort of task %s%s: %s", ids, more, exc)
        finally:
            for _, done in batch:
                if not done.done():
                    done.set_result(None)

    async def _drain(self) -> None:
        try:
            while self._queued:
                await self._round()
        finally:
            self._busy = False

    def track(self, task: asyncio.Task[None]) -> None:
        """Keep ``task`` until it ends (a worker stopping waits for it)."""
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
