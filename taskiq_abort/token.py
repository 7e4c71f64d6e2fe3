"""What a task sees of an abort: a cooperative token (via dependency injection) and ``shield``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
from taskiq import Context, TaskiqDepends

from taskiq_abort._worker.attempt import MESSAGE_ATTR, RunningTask, current_run


class AbortToken:
    """Tells a task whether it has been aborted. Declare it as a dependency::

        @broker.task
        def crunch(n: int, token: AbortToken = TaskiqDepends()) -> int:
            for chunk in range(n):
                token.raise_if_aborted()   # a sync task checks (or see interrupt_threads)
                work(chunk)
            return n

    Async tasks are cancelled at their next ``await`` without it; they can still use it to
    check (``token.is_aborted``) or wait (``await token.wait()``). Outside a worker managed by
    ``AbortMiddleware`` it is never aborted.

    A token pickles (``taskiq worker --use-process-pool`` pickles a sync task's arguments to
    run it in another process) to a *detached* token with the same ``task_id`` that is never
    aborted: the attempt it reports on lives in the worker process, not in the child.
    """

    def __init__(self, context: Context = TaskiqDepends()) -> None:
        self._run: RunningTask | None = getattr(context.message, MESSAGE_ATTR, None)
        self.task_id: str = context.message.task_id

    def __reduce__(self) -> tuple[Callable[[str], AbortToken], tuple[str]]:
        # The attempt holds asyncio tasks and locks, which cannot cross a process boundary;
        # without this, every sync task taking a token failed under --use-process-pool.
        return _detached_token, (self.task_id,)

    def __copy__(self) -> AbortToken:
        # A copy in the same process still reports on the same attempt (pickling detaches).
        return _token_of(self._run, self.task_id)

    def __deepcopy__(self, memo: dict[int, object]) -> AbortToken:
        return _token_of(self._run, self.task_id)

    @property
    def is_aborted(self) -> bool:
        """True once an abort for this task reached its worker."""
        return self._run is not None and self._run.aborted

    @property
    def reason(self) -> str | None:
        """The reason given to ``abort()``, if any."""
        return self._run.reason if self._run is not None else None

    def raise_if_aborted(self) -> None:
        """Raise :class:`~taskiq_abort.TaskAbortedError` (or the subclass that says why: a time
        limit) if the task has been aborted."""
        if self._run is not None and self._run.aborted:
            raise self._run.error()  # why it was stopped, by its class (a time limit...)

    def wait_sync(self, timeout: float | None = None) -> bool:
        """Block a sync task (thread) until aborted or ``timeout``; ``True`` if aborted.
        Outside a worker attempt it is never aborted: it waits out ``timeout`` (forever with
        ``None``), as ``wait()`` does."""
        if self._run is None:
            return threading.Event().wait(timeout)
        return self._run.event().wait(timeout)

    async def wait(self) -> None:
        """Sleep until the task is aborted (in the task body itself, the abort also cancels
        this ``await``; in a child task the body started, it is the signal to stop)."""
        if self._run is None:
            await asyncio.Event().wait()
            return
        await self._run.async_event().wait()


def _token_of(run: RunningTask | None, task_id: str) -> AbortToken:
    token = AbortToken.__new__(AbortToken)
    token._run = run
    token.task_id = task_id
    return token


def _detached_token(task_id: str) -> AbortToken:
    """What an unpickled token is: never aborted, as outside a worker."""
    return _token_of(None, task_id)


@asynccontextmanager
async def shield() -> AsyncIterator[None]:
    """Let a critical step finish before an abort takes effect::

        async with shield():
            await db.commit()  # runs to the end even if the task is aborted meanwhile
        await next_step()  # an abort that arrived during the commit lands here

    Also protects clean-up in ``finally`` blocks under ``cancel_mode="level"``.
    """
    run = current_run.get()
    if run is None:  # outside a worker attempt: only anyio's shield applies
        with anyio.CancelScope(shield=True):
            yield
        return
    with anyio.CancelScope(shield=True):
        run.shields += 1
        try:
            yield
        finally:
            run.shields -= 1
    run.deliver()  # an abort that arrived meanwhile lands at the next await
