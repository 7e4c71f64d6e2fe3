"""Running a task body so that an abort can stop it: per-attempt state and the function wrapper.

The wrapper covers the task body only, never the receiver's code around it that stores the
result and acks, so an aborted task always ends with a stored ``TaskAbortedError`` and an acked
message. An async body is awaited through :class:`taskiq_abort._worker.body.Body`, which
delivers the abort as a ``CancelledError`` at the body's current ``await``, in one of two ways
chosen by ``AbortMiddleware(cancel_mode=...)``:

- ``"edge"`` (default): asyncio's own semantics. One ``CancelledError``; ``except``/``finally``
  blocks may then ``await`` their clean-up (close a session, roll back) as they would after
  ``Task.cancel()``. One that the body or code it awaits drops is delivered again at the body's
  next ``await``.
- ``"level"``: anyio's semantics. Every later ``await`` of the body is cancelled too (clean-up
  must be in ``shield()``).

The body is reported stopped (``TaskAbortedError``) only if it did not run on: it raised once
the abort reached it. A body that returns has its own result, aborted or not.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import traceback
from collections.abc import Callable
from typing import Any

from taskiq_abort._worker.attempt import RunningTask, current_run
from taskiq_abort._worker.body import Body
from taskiq_abort._worker.threads import ThreadInterrupt
from taskiq_abort.errors import TaskAbortedError, TaskInterrupted

_WRAPPED = "__taskiq_abort_wrapped__"


def _enter(run: RunningTask | None) -> RunningTask | None:
    # Only the first call in an attempt is the task body; a task calling another task's
    # function directly (``await other(x)``) runs it plainly inside its own scope.
    if run is None or run.entered:
        return None
    run.check()
    run.entered = True
    return run


def _aborted(run: RunningTask, exc: Exception) -> TaskAbortedError:
    """What an error raised after the abort (or in its grace period) becomes."""
    if isinstance(exc, TaskAbortedError) and exc.task_id == run.task_id:
        return exc  # raised through the token: keep it as it is
    aborted = run.error()
    aborted.__cause__ = exc  # as ``raise ... from exc``, without making exc its own cause
    return aborted


def _run_sync(run: RunningTask, func: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    """Run a sync body so that an abort can interrupt its thread (see ``threads``)."""
    guard = ThreadInterrupt()
    try:
        try:
            run.thread = guard
            if run.abort_requested and run.stopping:
                run.forced = True  # its grace ran out before the thread was installed
            run.deliver()  # an abort that came between the start check and now
            result = func(*args, **kwargs)
        finally:
            try:
                guard.close()
            except TaskInterrupted:  # it landed in close() itself: nothing is pending now
                guard.close()
            run.thread = None
    except TaskInterrupted:
        raise run.error() from None
    except Exception as exc:
        if run.ending:
            raise _aborted(run, exc)  # noqa: B904 (_aborted sets its cause)
        raise
    # It returned: it finished before the interrupt landed (``close`` took that back), or
    # caught it and returned. Either way it ran on, so its own result stands, as an async
    # body's does when it catches the ``CancelledError`` and returns.
    return result


def wrap_task_function(func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a task function once; transparent when called outside a worker attempt."""
    if getattr(func, _WRAPPED, False):
        return func
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            run = current_run.get()
            outer = run is not None and not run.entered  # the attempt's body, not a call in it
            try:
                if _enter(run) is None:
                    return await func(*args, **kwargs)
                assert run is not None
                # Inline, not a coroutine of its own: every await of the body resumes each
                # frame between the task and the body.
                body = run.body = Body(run, func(*args, **kwargs), level=run.mode == "level")
                run.start_limits()
                run.deliver()  # an abort that came between the start check and now
                try:
                    return await body
                except asyncio.CancelledError:
                    if not body.reached:
                        raise  # not ours (worker shutdown...): let it through
                    raise run.error() from None
                except Exception as exc:
                    # Raised while cleaning up after the abort, or while stopping on its own
                    # in a grace period (through the token): the abort's result.
                    if run.ending:
                        raise _aborted(run, exc)  # noqa: B904 (_aborted sets its cause)
                    raise
                finally:
                    run.body = None  # no cancel may land outside the body
            except TaskAbortedError:
                if run is not None:
                    run.no_retry()
                if outer:
                    assert run is not None
                    await run.take_turn()  # the body has stopped: its report waits its turn
                raise

        wrapper: Callable[..., Any] = async_wrapper
    else:

        @functools.wraps(func)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            run = current_run.get()
            try:
                body = _enter(run)
                if body is None:
                    return func(*args, **kwargs)
                body.plain_sync = not body.interrupt
                body.start_limits_threadsafe()
                if body.interrupt:
                    return _run_sync(body, func, args, kwargs)
                # Without interrupt_threads: only the start check and the token apply.
                try:
                    return func(*args, **kwargs)
                finally:
                    body.plain_sync = False  # over: no warning that it runs on
            except TaskAbortedError:
                if run is not None:
                    run.no_retry()
                raise

        wrapper = sync_wrapper
    setattr(wrapper, _WRAPPED, True)
    return wrapper


def release_frames(error: BaseException | None) -> None:
    """Clear the locals of the finished frames in an aborted task's tracebacks. taskiq's
    ``run_task`` keeps ``(type, exc, exc.__traceback__)`` in a local, so its frame, the
    traceback and every frame below form a cycle that only the cyclic GC frees: ~20 objects
    per aborted task, and with thousands of tasks running, every full collection scans them
    all. Called by ``post_save``: the result is stored and every ``on_error`` hook has run."""
    for _ in range(8):  # the exception and its context (the CancelledError), not further
        if error is None:
            return
        traceback.clear_frames(error.__traceback__)
        error = error.__context__
