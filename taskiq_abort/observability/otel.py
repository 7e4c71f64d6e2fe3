"""OpenTelemetry for aborts (extra ``otel``), with taskiq's ``OpenTelemetryMiddleware`` or
``TaskiqInstrumentor``: an event on the aborted task's ``execute/{task_name}`` span, and an
``abort/{task_name}`` span on the aborter's side that links to it.

taskiq's middleware keeps each task's span on the ``TaskiqMessage`` (attribute
``__otel_task_span``, keyed by ``(task_id, is_publish)``), open until its ``post_execute``; the
abort's event is added from ``AbortMiddleware.on_error``, before that. The aborter, in another
process, learns the span's ids from the task's progress record (``progress.py`` puts them in
its meta), which the worker writes before it stores the result and confirms the abort.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags, TracerProvider

from taskiq_abort import __version__
from taskiq_abort.observability import events
from taskiq_abort.observability.progress import read_meta
from taskiq_abort.observability.spans import execute_span

EVENT = "taskiq_abort.aborted"


def _attributes(event: events.AbortApplied) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "taskiq_abort.task_id": event.task_id,
        "taskiq_abort.phase": event.phase,
        "taskiq_abort.reason": event.reason or "",
    }
    if event.requested_by:
        attrs["taskiq_abort.requested_by"] = event.requested_by
    if event.delivery is not None:
        attrs["taskiq_abort.delivery_ms"] = round(event.delivery * 1000, 3)
    return attrs


class AbortTracing:
    """Adds the abort event to execute spans; traces ``abort()`` calls of traced callers."""

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self.tracer = trace.get_tracer("taskiq_abort", __version__, tracer_provider)

    def abort_applied(self, event: events.AbortApplied) -> None:
        span = execute_span(event.message)
        if span is not None and span.is_recording():
            span.add_event(EVENT, _attributes(event))
            span.set_attribute("taskiq_abort.outcome", event.phase)

    async def abort_requested(self, event: events.AbortRequested) -> None:
        if not trace.get_current_span().get_span_context().is_valid:
            return  # the caller is not traced: no span of our own
        meta: dict[str, Any] = {}
        backend = getattr(event.broker, "result_backend", None)
        if event.status in ("aborted", "revoked") and backend is not None:
            meta = await read_meta(backend, event.task_id)
        links = []
        if meta.get("trace_id") and meta.get("span_id"):
            target = SpanContext(
                trace_id=int(meta["trace_id"], 16),
                span_id=int(meta["span_id"], 16),
                is_remote=True,
                trace_flags=TraceFlags(TraceFlags.SAMPLED),
            )
            links.append(Link(target, {"taskiq_abort.link": "aborted task"}))
        name = meta.get("task_name") or "task"
        span = self.tracer.start_span(
            f"abort/{name}",
            kind=SpanKind.PRODUCER,
            links=links,
            start_time=int(event.started * 1e9),
            attributes={
                "taskiq_abort.task_id": event.task_id,
                "taskiq_abort.status": event.status,
                "taskiq_abort.reason": event.reason or "",
                "taskiq_abort._worker.side": event.worker or "",
            },
        )
        span.end()
