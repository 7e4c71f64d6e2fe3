"""The one read model of the CLI (``taskiq-abort ls``/``status``/``rules``) and the web API: a
task's state, a running task's row, an abort request's fields, the order of the rules. Pure
functions over what the registry and the request records hold; each front end renders them its
own way."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal, cast, get_args

from taskiq_abort._labels import PARENT
from taskiq_abort.backends.base import RequestRecord
from taskiq_abort.outcome import AbortRule, RunningEntry, WorkerInfo

FINAL = ("aborted", "revoked")
"""Recorded outcomes after which a task will not run (on)."""
TaskStateName = Literal["running", "requested", "aborted", "revoked", "finished", "unknown"]
STATES: tuple[str, ...] = get_args(TaskStateName)


def soonest_first(rules: Iterable[AbortRule]) -> list[AbortRule]:
    """Abort rules in the order both front ends list them: soonest to expire first."""
    return sorted(rules, key=lambda r: (r.expires_at, r.rule_id))


def task_state(
    running: bool, request: RequestRecord | None, has_result: bool | None
) -> TaskStateName:
    """One word for a task: what the registry (``running``: a worker holds an entry for it),
    its abort request and its result say together.

    A final outcome wins over a registry entry. ``aborted`` is recorded by the worker's
    confirmation, after the attempt ended; ``revoked`` by the aborter when no worker held the
    task, and a worker that picks it up later refuses it at its start. Registry entries, though,
    leave in the worker's next registry batch: an entry next to a final outcome is the tail of
    an attempt that already stopped, not a task that runs.

    >>> task_state(True, None, None), task_state(False, None, True), task_state(False, None, None)
    ('running', 'finished', 'unknown')
    """
    if request is not None and request.outcome in FINAL:
        return cast(TaskStateName, request.outcome)
    if running:
        return "running"
    if request is not None:
        # An outcome this version does not know (a newer one may record it) is still a request.
        return cast(TaskStateName, request.outcome) if request.outcome in STATES else "requested"
    if has_result:
        return "finished"
    return "unknown"


def running_row(
    entry: RunningEntry, worker: WorkerInfo, request: RequestRecord | None, now: float
) -> dict[str, Any]:
    """A running task as ``ls --json`` and the web API's task list show it."""
    return {
        "task_id": entry.task_id,
        "task_name": entry.task_name,
        "worker": worker.worker_id,
        "host": worker.host,
        "pid": worker.pid,
        "started": entry.started,
        "running_for_s": round(max(0.0, now - entry.started), 3),
        "soft_time_limit_s": entry.soft_limit,
        "time_limit_s": entry.time_limit,
        "time_left_s": _rounded(entry.time_left(now)),
        "abort_requested": request is not None,
        "abort_reason": request.reason if request else None,
        "labels": dict(entry.labels),
        "parent": entry.label_map.get(PARENT),
    }


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def request_fields(request: RequestRecord) -> dict[str, Any]:
    """An abort request as ``status --json`` and the web API show it."""
    return {
        "reason": request.reason,
        "requested_at": request.requested_at,
        "requested_by": request.requested_by,
        "outcome": request.outcome,
        "worker": request.worker,
    }
