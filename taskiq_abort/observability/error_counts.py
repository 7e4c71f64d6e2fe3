"""Keeping aborts out of taskiq's error counts: an aborted task is an expected outcome.

taskiq's ``PrometheusMiddleware`` and ``OpenTelemetryMiddleware`` count every error result in a
counter attribute of the middleware instance, and the OTel one marks its span ERROR. taskiq
offers no hook for that, so this module (and only this one) swaps those instance attributes for
the span of one synchronous hook call; it refuses, with a warning, when the hooks' shape is not
the one it knows.
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Callable
from typing import Any

from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult
from taskiq.middlewares.prometheus_middleware import PrometheusMiddleware

from taskiq_abort.errors import TaskAbortedError

logger = logging.getLogger("taskiq_abort")
_OTEL_MODULE = "taskiq.middlewares.opentelemetry_middleware"
_PATCHED = "__taskiq_abort_patched__"


class _NoCount:
    """Stands in for an error counter while an aborted task's result goes through a hook."""

    def labels(self, *args: Any, **kwargs: Any) -> _NoCount:
        return self

    def inc(self, *args: Any, **kwargs: Any) -> None:
        pass

    def add(self, *args: Any, **kwargs: Any) -> None:
        pass


_NO_COUNT = _NoCount()


def _without(middleware: Any, counter: str, hook: Callable[..., Any]) -> Callable[..., Any]:
    """``hook`` (a sync ``post_execute``) that does not count aborted results in ``counter``.
    The counter is swapped only for the duration of one synchronous call: no other task's
    hook can run meanwhile on this event loop."""

    def post_execute(message: TaskiqMessage, result: TaskiqResult[Any]) -> Any:
        if not result.is_err or not isinstance(result.error, TaskAbortedError):
            return hook(message, result)
        saved = getattr(middleware, counter)
        setattr(middleware, counter, _NO_COUNT)
        try:
            return hook(message, result)
        finally:
            setattr(middleware, counter, saved)

    return post_execute


def keep_aborts_out_of_errors(middleware: TaskiqMiddleware) -> bool:
    """Make taskiq's Prometheus or OpenTelemetry middleware (this instance) not count aborted
    tasks as errors, and not mark their spans ERROR; ``True`` when it patched something.

    taskiq calls its hooks through the instance (``middleware.post_execute(...)``), so instance
    attributes take effect; its hooks are synchronous, so nothing runs between swap and restore.
    """
    if getattr(middleware, _PATCHED, False):
        return False
    otel = sys.modules.get(_OTEL_MODULE)
    otel_class = getattr(otel, "OpenTelemetryMiddleware", None) if otel else None
    is_otel = otel_class is not None and isinstance(middleware, otel_class)
    if isinstance(middleware, PrometheusMiddleware):
        counter = "found_errors"
    elif is_otel:
        counter = "n_errors_counter"
    else:
        return False
    hook = middleware.post_execute
    hooks = (hook, middleware.on_error) if is_otel else (hook,)
    if any(inspect.iscoroutinefunction(h) for h in hooks) or not hasattr(middleware, counter):
        logger.warning(
            "taskiq-abort: cannot keep aborts out of %s's errors (its hooks changed)",
            type(middleware).__name__,
        )
        return False
    if is_otel:
        middleware.on_error = _span_not_failed(middleware.on_error)  # type: ignore[method-assign]
    middleware.post_execute = _without(middleware, counter, hook)  # type: ignore[method-assign]
    setattr(middleware, _PATCHED, True)
    return True


def _span_not_failed(hook: Callable[..., Any]) -> Callable[..., Any]:
    """OpenTelemetryMiddleware.on_error marks the span ERROR and records the exception; for an
    abort, skip it (``AbortMiddleware.on_error`` adds the ``taskiq_abort.aborted`` event)."""

    def on_error(message: TaskiqMessage, result: TaskiqResult[Any], exc: BaseException) -> Any:
        if isinstance(exc, TaskAbortedError):
            return None
        return hook(message, result, exc)

    return on_error
