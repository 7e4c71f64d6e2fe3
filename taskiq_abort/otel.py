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

from taskiq_abort import observe

EVENT = "taskiq_abort.aborted"
_OTEL_CTX_KEY = "__otel_task_span"  # taskiq.middlewares.opentelemetry_middleware.CTX_KEY


def execute_span(message: Any) -> Any:
    """The open ``execute/{task_name}`` span of this message, if taskiq's OTel middleware
    started one (``None`` otherwise)."""
    spans = getattr(message, _OTEL_CTX_KEY, None)
    if not isinstance(spans, dict):
        return None
    ctx = spans.get((message.task_id, False))
    return ctx[0] if ctx else None


def span_ids(message: Any) -> dict[str, str]:
    """``trace_id`` and ``span_id`` (hex) of the message's execute span, for the progress meta."""
    span = execute_span(message)
    if span is None:
        return {}
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return {}
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}


def _attributes(event: observe.AbortApplied) -> dict[str, Any]:
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
        from taskiq_abort import __version__

        self.tracer = trace.get_tracer("taskiq_abort", __version__, tracer_provider)

    def abort_applied(self, event: observe.AbortApplied) -> None:
        span = execute_span(event.message)
        if span is not None and span.is_recording():
            span.add_event(EVENT, _attributes(event))
            span.set_attribute("taskiq_abort.outcome", event.phase)

    async def abort_requested(self, event: observe.AbortRequested) -> None:
        if not trace.get_current_span().get_span_context().is_valid:
            return  # the caller is not traced: no span of our own
        meta: dict[str, Any] = {}
        backend = getattr(event.broker, "result_backend", None)
        if event.status in ("aborted", "revoked") and backend is not None:
            from taskiq_abort.progress import read_meta

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
                "taskiq_abort.worker": event.worker or "",
            },
        )
        span.end()
