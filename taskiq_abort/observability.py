"""``AbortObservability``: aborts in Prometheus, OpenTelemetry and taskiq's progress API, and
kept out of taskiq's error counts.

Add it next to ``AbortMiddleware`` (in any order)::

    broker = broker.with_middlewares(
        PrometheusMiddleware(server_port=9000),
        AbortMiddleware(url),
        AbortObservability(),
    )

Nothing here imports prometheus-client or OpenTelemetry before ``startup()`` (see metrics.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import sys
from collections.abc import Callable
from typing import Any

from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult
from taskiq.middlewares.prometheus_middleware import PrometheusMiddleware

from taskiq_abort import observe
from taskiq_abort.errors import TaskAbortedError

logger = logging.getLogger("taskiq_abort")
_OTEL_MODULE = "taskiq.middlewares.opentelemetry_middleware"
_PATCHED = "__taskiq_abort_patched__"
_LOOKUP_TIMEOUT = 1.0


class AbortObservability(TaskiqMiddleware):
    """Reports aborts to the tools operators already watch.

    :param metrics: Prometheus counters and histograms (extra ``metrics``), in the registry
        and multiprocess directory of taskiq's ``PrometheusMiddleware`` when there is one.
    :param metrics_port: also serve them on this port (for brokers without
        ``PrometheusMiddleware``); the first worker process to bind it serves all of them when
        ``PROMETHEUS_MULTIPROC_DIR`` is set (``metrics_path`` sets it).
    :param metrics_addr: address of that server.
    :param metrics_path: a multiprocess directory to use when none is set (ignored when
        ``PrometheusMiddleware`` or the environment already set one).
    :param tracing: with OpenTelemetry installed, an event ``taskiq_abort.aborted`` on the
        aborted task's ``execute/{task_name}`` span and an ``abort/{task_name}`` span, linked to
        it, for ``abort()`` calls made inside a traced span.
    :param tracer_provider: OpenTelemetry tracer provider (default: the global one).
    :param progress: store the progress state ``ABORTED`` (reason in its meta) for aborted and
        revoked tasks, through the result backend's ``set_progress``.
    :param count_aborts_as_errors: ``False`` (default) keeps aborted tasks out of taskiq's
        ``found_errors_total`` (``PrometheusMiddleware``) and ``task_errors``
        (``OpenTelemetryMiddleware``), and leaves their span's status unset instead of ERROR.
    """

    def __init__(
        self,
        *,
        metrics: bool = True,
        metrics_port: int | None = None,
        metrics_addr: str = "0.0.0.0",  # PrometheusMiddleware's default too
        metrics_path: str | None = None,
        tracing: bool = True,
        tracer_provider: Any = None,
        progress: bool = True,
        count_aborts_as_errors: bool = False,
    ) -> None:
        super().__init__()
        self.metrics = metrics
        self.metrics_port = metrics_port
        self.metrics_addr = metrics_addr
        self.metrics_path = metrics_path
        self.tracing = tracing
        self.tracer_provider = tracer_provider
        self.progress = progress
        self.count_aborts_as_errors = count_aborts_as_errors
        self._observer: _BrokerObserver | None = None

    def startup(self) -> None:
        if self._observer is not None or self.broker is None:
            return
        observer = _BrokerObserver(self.broker, self.progress)
        if self.metrics:
            _set_multiprocess_dir(self.metrics_path)
            from taskiq_abort import metrics

            observer.metrics = metrics.enable()
            if self.metrics_port is not None and self.broker.is_worker_process:
                metrics.serve(self.metrics_port, self.metrics_addr)
        if self.tracing:
            try:
                from taskiq_abort.otel import AbortTracing
            except ImportError:
                logger.debug("taskiq-abort: OpenTelemetry is not installed; no abort spans")
            else:
                observer.tracing = AbortTracing(self.tracer_provider)
        if not self.count_aborts_as_errors:
            for middleware in self.broker.middlewares:
                keep_aborts_out_of_errors(middleware)
        observe.subscribe(observer)
        self._observer = observer

    def shutdown(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observe.unsubscribe(observer)


def _set_multiprocess_dir(path: str | None) -> None:
    import os

    if path and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.makedirs(path, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path


class _BrokerObserver(observe.Observer):
    """One broker's subscription: ignores other brokers' events (the hub is per process)."""

    def __init__(self, broker: Any, progress: bool) -> None:
        self.broker = broker
        self.progress = progress
        self.metrics: observe.Observer | None = None
        self.tracing: Any = None

    async def abort_applied(self, event: observe.AbortApplied) -> None:
        if event.broker is not self.broker:
            return
        if event.requested_by is None and (self.tracing is not None or self.progress):
            event = await self._with_aborter(event)
        if self.metrics is not None:
            self.metrics.abort_applied(event)
        if self.tracing is not None:
            self.tracing.abort_applied(event)
        if self.progress:
            from taskiq_abort import progress

            await progress.on_applied(event)

    async def _with_aborter(self, event: observe.AbortApplied) -> observe.AbortApplied:
        """Who asked, from the stored request (the Redis broadcast does not say): one read per
        applied abort, for the span event and the progress meta."""
        from taskiq_abort.middleware import AbortMiddleware

        for middleware in self.broker.middlewares:
            if isinstance(middleware, AbortMiddleware):
                try:
                    record = await asyncio.wait_for(
                        middleware.backend.get_request(event.task_id), _LOOKUP_TIMEOUT
                    )
                except Exception:  # a report, never a reason to hold the result up for long
                    return event
                if record is not None and record.requested_by:
                    return dataclasses.replace(event, requested_by=record.requested_by)
        return event

    async def abort_requested(self, event: observe.AbortRequested) -> None:
        if event.broker is not self.broker:
            return
        if self.metrics is not None:
            self.metrics.abort_requested(event)
        if self.progress:
            from taskiq_abort import progress

            await progress.on_requested(event)
        if self.tracing is not None:
            await self.tracing.abort_requested(event)

    def abort_forced(self, task_name: str) -> None:
        if self.metrics is not None:
            self.metrics.abort_forced(task_name)

    def registry_outage(self) -> None:
        if self.metrics is not None:
            self.metrics.registry_outage()

    def malformed_message(self) -> None:
        if self.metrics is not None:
            self.metrics.malformed_message()


# --- keeping aborts out of taskiq's error counts ----------------------------------------
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
