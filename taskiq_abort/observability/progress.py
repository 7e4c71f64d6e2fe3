"""taskiq's progress API for aborts: an aborted or revoked task reports the state ``ABORTED``.

Existing status endpoints built on ``await task.get_progress()`` (``TaskProgress.state`` and
``.meta``) show it without new code. The meta holds ``reason``, ``phase`` (``running`` or
``queued``), ``task_name``, ``requested_by``, ``delivery_ms`` and, when the task was traced, the
``trace_id`` and ``span_id`` of its ``execute/{task_name}`` span.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from taskiq.depends.progress_tracker import TaskProgress

from taskiq_abort._results import stored_results
from taskiq_abort.observability import events
from taskiq_abort.observability.spans import span_ids

logger = logging.getLogger("taskiq_abort")

ABORTED = "ABORTED"
"""The progress state of an aborted or revoked task (taskiq's ``TaskState`` has no such value;
``TaskProgress.state`` accepts any string)."""
_TIMEOUT = 3.0  # a hung result backend must not hold the result of an aborted task for long


async def report(backend: Any, task_id: str, meta: dict[str, Any]) -> None:
    """Store ``ABORTED`` with ``meta`` as ``task_id``'s progress (best effort)."""
    backend = stored_results(backend)
    if backend is None:
        return
    try:
        await asyncio.wait_for(
            backend.set_progress(task_id, TaskProgress(state=ABORTED, meta=meta)), _TIMEOUT
        )
    except Exception as exc:  # progress is a report, never a reason to lose the result
        logger.warning("taskiq-abort: could not store the progress of task %s: %r", task_id, exc)


async def read_meta(backend: Any, task_id: str) -> dict[str, Any]:
    """The meta of ``task_id``'s ``ABORTED`` progress; ``{}`` when there is none."""
    backend = stored_results(backend)
    if backend is None:
        return {}
    try:
        progress = await asyncio.wait_for(backend.get_progress(task_id), _TIMEOUT)
    except Exception:
        return {}
    if progress is None or progress.state != ABORTED or not isinstance(progress.meta, dict):
        return {}
    return progress.meta


def applied_meta(event: events.AbortApplied) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "reason": event.reason,
        "phase": event.phase,
        "task_name": event.task_name,
        "requested_by": event.requested_by,
        "delivery_ms": None if event.delivery is None else round(event.delivery * 1000, 3),
    }
    meta.update(span_ids(event.message))
    return meta


async def on_applied(event: events.AbortApplied) -> None:
    """Worker side: the attempt ended aborted (running) or was refused (queued)."""
    backend = getattr(event.broker, "result_backend", None)
    await report(backend, event.task_id, applied_meta(event))


async def on_requested(event: events.AbortRequested) -> None:
    """Aborter side: a task revoked before any worker took it has no worker to report it."""
    if event.status != "revoked":
        return
    backend = getattr(event.broker, "result_backend", None)
    if await read_meta(backend, event.task_id):
        return  # a worker that refused it at its start already reported it, with more detail
    meta = {"reason": event.reason, "phase": events.QUEUED, "requested_by": None}
    await report(backend, event.task_id, meta)
