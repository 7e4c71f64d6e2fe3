"""taskiq's ``execute/{task_name}`` span of a message, read where taskiq's OpenTelemetry
middleware keeps it (a private attribute of the ``TaskiqMessage``: this module is the one place
that knows it). Imports no OpenTelemetry: the progress meta names the span without the extra.
"""

from __future__ import annotations

from typing import Any

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
