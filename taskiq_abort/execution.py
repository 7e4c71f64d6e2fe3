"""Running a task body so that an abort can stop it: per-attempt state and the function wrapper.

The wrapper covers the task body only, never the receiver's code around it that stores the
result and acks, so an aborted task always ends with a stored ``TaskAbortedError`` and an acked
message. Two ways to deliver the cancellation, chosen by ``AbortMiddleware(cancel_mode=...)``:

- ``"edge"`` (default): asyncio's own semantics. One ``CancelledError`` at the task's current
  ``await``; ``except``/``finally`` blocks may then ``await`` their clean-up (close a session,
  roll back) as they would after ``Task.cancel()``.
- ``"level"``: anyio's semantics. The body runs in an anyio cancel scope that stays cancelled:
  every later ``await`` inside it is cancelled too (clean-up must be shielded), so even a body
  that swallows ``CancelledError`` cannot carry on.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import sys
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any, Literal

import anyio

from taskiq_abort.backends.base import RunningEntry
from taskiq_abort.errors import TaskAbortedError

CancelMode = Literal["edge", "level"]

MESSAGE_ATTR = "_taskiq_abort_run"
"""Attribute the middleware attaches to a ``TaskiqMessage`` (not a field: never serialized)."""

current_run: ContextVar[RunningTask | None] = ContextVar("taskiq_abort_run", default=None)
_WRAPPED = "__taskiq_abort_wrapped__"
_CANCEL_MSG = "aborted by taskiq-abort"
_run_ids = itertools.count(1)


class RunningTask:
    """One attempt of one task on this worker, from ``pre_execute`` to ``post_save``."""

    __slots__ = (
        "_async_event",
        "_event",
        "abort_requested",
        "callback",
        "context",
        "delivered",
        "done",
        "entered",
        "entry",
        "host",
        "mode",
        "reason",
        "refused",
        "registered",
        "revoked",
        "scope",
        "shields",
    )

    def __init__(
        self, task_id: str, task_name: str, worker_id: str, mode: CancelMode = "edge"
    ) -> None:
        run_id = f"{next(_run_ids):x}"  # unique within this worker, which is all it needs
        self.entry = RunningEntry(task_id, task_name, run_id, time.time(), worker_id)
        self.mode = mode
        self.host: asyncio.Task[Any] | None = None  # the task running the body, while it runs
        self.scope: anyio.CancelScope | None = None  # level mode only
        self.shields = 0  # open ``shield()`` sections: the cancel waits for them
        self.delivered = False
        self.abort_requested = False  # an abort arrived while this attempt was held
        self.revoked = False  # an abort request existed when this attempt started
        self.refused: BaseException | None = None  # fail-closed: the registry was unreachable
        self.reason: str | None = None
        self.entered = False
        self.registered = False
        # taskiq's callback task for this attempt: once it is done, the attempt is over, even
        # if post_save never came (taskiq skips it when storing the result fails).
        self.callback: asyncio.Task[Any] | None = None
        self.done = False
        self.context: Token[RunningTask | None] | None = None  # to reset ``current_run``
        self._event: threading.Event | None = None
        self._async_event: asyncio.Event | None = None

    @property
    def task_id(self) -> str:
        return self.entry.task_id

    @property
    def aborted(self) -> bool:
        return self.abort_requested or self.revoked

    def request_abort(self, reason: str | None) -> bool:
        """Stop this attempt; ``True`` when this call is what aborted it."""
        if self.aborted or self.done:
            return False
        self.abort_requested, self.reason = True, reason
        self.deliver()
        if self._event is not None:
            self._event.set()
        if self._async_event is not None:
            self._async_event.set()
        return True

    def deliver(self) -> None:
        """Cancel the body now, unless a shielded section is open (then at its end)."""
        if not self.abort_requested or self.delivered or self.shields:
            return
        if self.scope is not None:
            self.delivered = True
            self.scope.cancel()
        elif self.host is not None:
            self.delivered = True
            self.host.cancel(_CANCEL_MSG)

    def revoke(self, reason: str | None) -> None:
        self.revoked, self.reason = True, reason

    def event(self) -> threading.Event:
        """Set once the task is aborted; a ``threading.Event`` so sync tasks can wait on it."""
        if self._event is None:
            self._event = threading.Event()
            if self.aborted:
                self._event.set()
        return self._event

    def async_event(self) -> asyncio.Event:
        """Set once the task is aborted; for async tasks (create it on the worker's loop)."""
        if self._async_event is None:
            self._async_event = asyncio.Event()
            if self.aborted:
                self._async_event.set()
        return self._async_event

    def check(self) -> None:
        """Raise if the body must not run (or run on)."""
        if self.aborted:
            raise TaskAbortedError(self.task_id, self.reason)
        if self.refused is not None:
            raise self.refused


def _enter(run: RunningTask | None) -> RunningTask | None:
    # Only the first call in an attempt is the task body; a task calling another task's
    # function directly (``await other(x)``) runs it plainly inside its own scope.
    if run is None or run.entered:
        return None
    run.check()
    run.entered = True
    return run


async def _run_edge(run: RunningTask, func: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    host = asyncio.current_task()
    run.host = host
    try:
        result = await func(*args, **kwargs)
    except asyncio.CancelledError:
        if not run.delivered:
            raise  # not ours (worker shutdown...): let it through
        if host is not None and sys.version_info >= (3, 11):
            host.uncancel()  # we consumed our own cancellation
        raise TaskAbortedError(run.task_id, run.reason) from None
    except Exception as exc:
        if run.abort_requested:  # an error raised while cleaning up after the abort
            raise TaskAbortedError(run.task_id, run.reason) from exc
        raise
    finally:
        run.host = None  # no cancel may land outside the body
    if run.abort_requested:  # the body caught the cancellation and returned: the abort wins
        if run.delivered and host is not None and sys.version_info >= (3, 11):
            while host.cancelling():  # a cancel that had not landed yet must not escape
                host.uncancel()
        raise TaskAbortedError(run.task_id, run.reason)
    return result


async def _run_level(run: RunningTask, func: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    with anyio.CancelScope() as scope:
        run.scope = scope
        run.deliver()  # an abort that arrived during a shield before the body started
        try:
            result = await func(*args, **kwargs)
        except Exception as exc:
            if run.abort_requested:
                raise TaskAbortedError(run.task_id, run.reason) from exc
            raise
        finally:
            run.scope = None
    if run.abort_requested:  # our scope swallowed the cancel, or the body returned anyway
        raise TaskAbortedError(run.task_id, run.reason)
    return result


def wrap_task_function(func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a task function once; transparent when called outside a worker attempt."""
    if getattr(func, _WRAPPED, False):
        return func
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            run = _enter(current_run.get())
            if run is None:
                return await func(*args, **kwargs)
            if run.mode == "level":
                return await _run_level(run, func, args, kwargs)
            return await _run_edge(run, func, args, kwargs)

        wrapper: Callable[..., Any] = async_wrapper
    else:

        @functools.wraps(func)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            # Threads cannot be interrupted: only the start check and the token apply.
            _enter(current_run.get())
            return func(*args, **kwargs)

        wrapper = sync_wrapper
    setattr(wrapper, _WRAPPED, True)
    return wrapper
