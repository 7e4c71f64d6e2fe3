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
import logging
import os
from typing import Any

from taskiq import TaskiqMiddleware

from taskiq_abort._aborter.calls import find_aborter
from taskiq_abort.observability import events, metrics, progress
from taskiq_abort.observability.error_counts import keep_aborts_out_of_errors

logger = logging.getLogger("taskiq_abort")
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
            observer.metrics = metrics.enable()
            if self.metrics_port is not None and self.broker.is_worker_process:
                metrics.serve(self.metrics_port, self.metrics_addr)
        if self.tracing:
            try:
                from taskiq_abort.observability.otel import AbortTracing
            except ImportError:
                logger.debug("taskiq-abort: OpenTelemetry is not installed; no abort spans")
            else:
                observer.tracing = AbortTracing(self.tracer_provider)
        if not self.count_aborts_as_errors:
            for middleware in self.broker.middlewares:
                keep_aborts_out_of_errors(middleware)
        events.subscribe(observer)
        self._observer = observer

    def shutdown(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            events.unsubscribe(observer)


def _set_multiprocess_dir(path: str | None) -> None:
    if path and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.makedirs(path, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path


class _BrokerObserver(events.Observer):
    """One broker's subscription: ignores other brokers' events (the hub is per process)."""

    def __init__(self, broker: Any, progress: bool) -> None:
        self.broker = broker
        self.progress = progress
        self.metrics: events.Observer | None = None
        self.tracing: Any = None

    async def abort_applied(self, event: events.AbortApplied) -> None:
        if event.broker is not self.broker:
            return
        if event.requested_by is None and (self.tracing is not None or self.progress):
            event = await self._with_aborter(event)
        if self.metrics is not None:
            self.metrics.abort_applied(event)
        if self.tracing is not None:
            self.tracing.abort_applied(event)
        if self.progress:
            await progress.on_applied(event)

    async def _with_aborter(self, event: events.AbortApplied) -> events.AbortApplied:
        """Who asked, from the stored request (the Redis broadcast does not say): one read per
        applied abort, for the span event and the progress meta."""
        try:
            backend = find_aborter(self.broker).backend
            record = await asyncio.wait_for(backend.get_request(event.task_id), _LOOKUP_TIMEOUT)
        except Exception:  # a report, never a reason to hold the result up for long
            return event
        if record is not None and record.requested_by:
            return dataclasses.replace(event, requested_by=record.requested_by)
        return event

    async def abort_requested(self, event: events.AbortRequested) -> None:
        if event.broker is not self.broker:
            return
        if self.metrics is not None:
            self.metrics.abort_requested(event)
        if self.progress:
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
