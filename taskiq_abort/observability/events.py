"""The observability hub: the core reports what happens to aborts here; logs are written here,
and metrics (``metrics.py``), traces (``otel.py``) and progress (``progress.py``) subscribe.

Dependency-free and silent on the task path: only an applied abort, an abort request, a registry
outage, a malformed control message and a heartbeat (the Redis clock) call into it. The core's
call sites are single lines, so the control plane can change without touching this module.

Delivery time is measured on the Redis clock, so that machines' clocks do not matter: the
request's Redis ``TIME`` (``at``, ms) comes with the broadcast, and the worker turns its own
clock into Redis's with the offset it sees in its heartbeats (the best of the last few).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from taskiq_abort.errors import TaskAbortedError, TaskExpired, TaskTimeLimitExceeded
from taskiq_abort.outcome import AbortOutcome

logger = logging.getLogger("taskiq_abort")

RUNNING = "running"
QUEUED = "queued"
TIME_LIMIT = "time_limit"
EXPIRED = "expired"
_SEEN_MAX = 4096  # abort broadcasts remembered per process (every worker hears every abort)


@dataclass(frozen=True)
class AbortApplied:
    """A worker ended an attempt because of an abort."""

    task_id: str
    task_name: str
    phase: str
    """``running`` (its body was cancelled), ``queued`` (revoked: refused at its start),
    ``time_limit`` (stopped at its time limit) or ``expired`` (refused at its start: past its
    ``expires`` deadline)."""
    reason: str | None
    requested_by: str | None
    """``host:pid`` of the aborter, when the broadcast said so."""
    delivery: float | None
    """Seconds from the request being recorded (Redis clock) to the body ending aborted on
    this worker; ``None`` when unknown (no broadcast seen, or ``queued``)."""
    message: Any = None
    """The ``TaskiqMessage`` (other middlewares keep their per-task state on it)."""
    broker: Any = None


@dataclass(frozen=True)
class AbortRequested:
    """An ``abort()`` call ended, on the aborter's side."""

    task_id: str
    status: str
    """An :class:`~taskiq_abort.AbortStatus` value, or ``error`` when ``abort()`` raised."""
    seconds: float
    reason: str | None
    worker: str | None
    started: float
    """``time.time()`` when the call started (for spans)."""
    broker: Any = None


class Observer:
    """Receives the hub's events; subscribe an instance with :func:`subscribe`.

    ``abort_applied`` and ``abort_requested`` may be ``async``. An observer's exception is
    logged and swallowed: it must never cost a task its result.
    """

    def abort_applied(self, event: AbortApplied) -> Awaitable[None] | None:
        return None

    def abort_requested(self, event: AbortRequested) -> Awaitable[None] | None:
        return None

    def abort_forced(self, task_name: str) -> None:
        """An attempt was cancelled because its abort's grace period ran out."""

    def registry_outage(self) -> None:
        """The worker lost the abort registry (once per outage)."""

    def malformed_message(self) -> None:
        """A control message that was not valid was dropped."""


_observers: list[Observer] = []
_offsets: deque[float] = deque(maxlen=8)
_seen: OrderedDict[str, tuple[float | None, str | None]] = OrderedDict()


def subscribe(observer: Observer) -> None:
    if all(o is not observer for o in _observers):
        _observers.append(observer)


def unsubscribe(observer: Observer) -> None:
    _observers[:] = [o for o in _observers if o is not observer]


# --- the Redis clock -----------------------------------------------------------------
def redis_time(value: object) -> bool:
    """Note a Redis ``TIME`` in ms (what the heartbeat returns; 0 when the registration is
    gone) and return whether the registration is alive."""
    if type(value) is int and value > 1:
        _offsets.append(value - time.time() * 1000)
    return bool(value)


def redis_now_ms() -> float:
    """Now on the Redis clock, as well as this process can tell (its own clock until the
    first heartbeat). The largest offset seen is the one least inflated by round trips."""
    return time.time() * 1000 + (max(_offsets) if _offsets else 0.0)


def request_seen(task_id: str, at_ms: float | None, requested_by: str | None) -> None:
    """An abort broadcast arrived: when it was recorded (Redis ms) and by whom."""
    if task_id not in _seen:
        _seen[task_id] = (at_ms, requested_by)
        while len(_seen) > _SEEN_MAX:
            _seen.popitem(last=False)


# --- events --------------------------------------------------------------------------
async def abort_applied(
    task_id: str,
    task_name: str,
    phase: str,
    reason: str | None,
    message: Any = None,
    broker: Any = None,
) -> None:
    """A worker ended an attempt aborted (called from ``AbortMiddleware.on_error``). Its log
    line is written by the log filter on taskiq's receiver logger (``applied_line``)."""
    at, by = _seen.pop(task_id, (None, None))
    delivery = _delivery(at, phase)
    event = AbortApplied(task_id, task_name, phase, reason, by, delivery, message, broker)
    for observer in list(_observers):
        await _call(observer.abort_applied, event)


def _delivery(at: float | None, phase: str) -> float | None:
    if at is None or phase != RUNNING:
        return None
    return max(0.0, (redis_now_ms() - at) / 1000)


def phase_of(error: TaskAbortedError, revoked: bool) -> str:
    """The phase an aborted attempt is counted and logged under (``revoked``: refused at its
    start)."""
    if isinstance(error, TaskExpired):
        return EXPIRED
    if isinstance(error, TaskTimeLimitExceeded):
        return TIME_LIMIT
    return QUEUED if revoked else RUNNING


def reason_text(reason: str | None) -> str:
    """The reason in a log line, or that none was given (never ``reason: None``).

    >>> reason_text("bad deploy"), reason_text(None)
    ('reason: bad deploy', 'no reason given')
    """
    return f"reason: {reason}" if reason else "no reason given"


def applied_line(task_id: str, task_name: str, phase: str, reason: str | None) -> str:
    """The worker's one INFO line for an applied abort. It replaces taskiq's own error line
    for the task (``logs.AbortedTaskLogFilter``): one line per abort, written where taskiq
    writes its line, so an abort costs the worker no more logging than before."""
    if phase == TIME_LIMIT:
        return f"taskiq-abort: stopped task {task_id} ({task_name}): {reason}"
    if phase != RUNNING:
        where = f"{task_id} ({task_name}) at its start"
        what = "expired" if phase == EXPIRED else "revoked"
        return f"taskiq-abort: skipped {what} task {where}, {reason_text(reason)}"
    at, _ = _seen.get(task_id, (None, None))
    delivery = _delivery(at, phase)
    shown = "?" if delivery is None else f"{delivery * 1000:.1f} ms"
    return (
        f"taskiq-abort: aborted task {task_id} ({task_name}) while running, {reason_text(reason)}; "
        f"delivered in {shown}"
    )


async def abort_requested(
    task_id: str,
    status: str,
    seconds: float,
    *,
    reason: str | None = None,
    worker: str | None = None,
    broker: Any = None,
) -> None:
    """An ``abort()`` call ended (called by ``AbortMiddleware.abort``)."""
    logger.info(
        "taskiq-abort: abort of task %s: %s%s in %.1f ms, %s",
        task_id,
        status,
        f" by {worker}" if worker else "",
        seconds * 1000,
        reason_text(reason),
    )
    event = AbortRequested(task_id, status, seconds, reason, worker, time.time() - seconds, broker)
    for observer in list(_observers):
        await _call(observer.abort_requested, event)


async def abort_answered(
    task_id: str,
    answer: AbortOutcome | BaseException,
    seconds: float,
    reason: str | None,
    broker: Any = None,
) -> None:
    """:func:`abort_requested` for an outcome, or for an error (``seconds``: until it came)."""
    if isinstance(answer, AbortOutcome):
        await abort_requested(
            task_id, answer.status.value, answer.elapsed, reason=answer.reason,
            worker=answer.worker, broker=broker,
        )  # fmt: skip
    else:
        await abort_requested(task_id, "error", seconds, reason=reason, broker=broker)


def abort_forced(task_name: str) -> None:
    """An attempt of ``task_name`` was cancelled because its abort's grace period ran out
    (``abort(..., grace=...)``); once per attempt, from ``AbortMiddleware.post_save``."""
    for observer in list(_observers):
        _call_sync(observer.abort_forced, task_name)


def registry_outage() -> None:
    for observer in list(_observers):
        _call_sync(observer.registry_outage)


def malformed_message() -> None:
    for observer in list(_observers):
        _call_sync(observer.malformed_message)


async def _call(method: Any, event: Any) -> None:
    try:
        outcome = method(event)
        if inspect.isawaitable(outcome):
            await outcome
    except Exception:
        logger.exception("taskiq-abort: observer %r failed", method)


def _call_sync(method: Any, *args: Any) -> None:
    try:
        method(*args)
    except Exception:
        logger.exception("taskiq-abort: observer %r failed", method)
