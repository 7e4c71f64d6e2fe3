"""Text and JSON rendering of the CLI's answers. Pure functions: easy to test, no I/O."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from taskiq_abort._read.state import FINAL, request_fields, running_row, task_state
from taskiq_abort.backends.base import RequestRecord
from taskiq_abort.outcome import AbortOutcome, AbortRule, RunningEntry, WorkerInfo

_ID_WIDTH = 32  # TaskIQ ids are uuid4().hex


def duration(seconds: float) -> str:
    """A short human duration.

    >>> [duration(s) for s in (0.04, 12.34, 245, 3 * 3600 + 240, 2 * 86400 + 3 * 3600)]
    ['0.0s', '12.3s', '4m05s', '3h04m', '2d03h']
    """
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def json_line(data: Mapping[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def outcome_lines(outcomes: Sequence[AbortOutcome]) -> list[str]:
    """One aligned line per outcome: id, status, worker, elapsed milliseconds."""
    id_w = max((len(o.task_id) for o in outcomes), default=0)
    worker_w = max((len(o.worker or "-") for o in outcomes), default=1)
    return [
        f"{o.task_id:<{id_w}}  {o.status.value:<11}  {o.worker or '-':<{worker_w}}  "
        f"{o.elapsed * 1000:8.1f} ms{'  forced' if o.forced else ''}"
        for o in outcomes
    ]


def rule_lines(rules: Sequence[AbortRule], now: float) -> list[str]:
    """A header and one aligned line per rule: id, time left, what it matches, its reason.

    >>> rule = AbortRule("3f2a9c1b7d4e", {"tenant": "acme"}, None, "abort rule 3f2a9c1b7d4e",
    ...                  0.0, 3600.0)
    >>> for line in rule_lines([rule], 0.0):
    ...     print(line)
    RULE          LEFT     MATCHES      REASON
    3f2a9c1b7d4e  1h00m    tenant=acme  abort rule 3f2a9c1b7d4e
    """
    rows = [
        (
            r.rule_id,
            duration(r.expires_at - now),
            ", ".join(
                [f"{k}={v}" for k, v in r.labels.items()]
                + ([f"name={r.task_name}"] if r.task_name is not None else [])
            ),
            r.reason,
        )
        for r in rules
    ]
    table = [("RULE", "LEFT", "MATCHES", "REASON"), *rows]
    id_w, left_w = (max(7, *(len(row[i]) for row in table)) for i in (0, 1))
    match_w = max(len(row[2]) for row in table)
    return [f"{a:<{id_w}}  {b:<{left_w}}  {c:<{match_w}}  {d}".rstrip() for a, b, c, d in table]


def revoked_note(count: int, request_ttl: float, has_result_backend: bool) -> str:
    """What ``revoked`` does and does not say: no worker had the task, which may not exist.

    >>> print(revoked_note(2, 86400, True))  # doctest: +ELLIPSIS
    note: no worker was running the 2 revoked tasks and they have no result: ... kept for 1d00h...
    """
    one = count == 1
    what = "the revoked task" if one else f"the {count} revoked tasks"
    result = f" and {'it has' if one else 'they have'} no result" if has_result_backend else ""
    kept = "its abort request is" if one else "their abort requests are"
    return (
        f"note: no worker was running {what}{result}: queued, or never sent (check the "
        f"id{'' if one else 's'}); {kept} kept for {duration(request_ttl)}: a worker that "
        f"picks {'it' if one else 'one'} up in that time skips it"
    )


@dataclass(frozen=True)
class Row:
    """A running task as ``ls`` shows it."""

    entry: RunningEntry
    worker: WorkerInfo
    request: RequestRecord | None

    def abort_state(self) -> str:
        if self.request is None:
            return "-"
        return self.request.outcome or "requested"

    def to_dict(self, now: float) -> dict[str, Any]:
        return running_row(self.entry, self.worker, self.request, now)


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def ls_lines(
    workers: Sequence[WorkerInfo], rows: Iterable[Row], now: float, show_idle: bool
) -> list[str]:
    """Running tasks grouped by worker, within 80 columns for TaskIQ's 32-character ids."""
    by_worker: dict[str, list[Row]] = {w.worker_id: [] for w in workers}
    for row in rows:
        by_worker[row.worker.worker_id].append(row)
    all_rows = [row for group in by_worker.values() for row in group]
    id_w = max([_ID_WIDTH, *(len(r.entry.task_id) for r in all_rows)])
    # 2 indent + id + 2 + name + 2 + running (7) + 2 + abort (11) = 80 for 32-char ids; a
    # column of time left before the hard limit (9) when a task has one, taken from the name
    limited = any(r.entry.time_limit is not None for r in all_rows)
    widest = 13 if limited else 22
    name_w = max(4, min(max((len(r.entry.task_name) for r in all_rows), default=4), widest))
    left_head = f"  {'LEFT':>7}" if limited else ""
    lines: list[str] = []
    for info in workers:
        group = by_worker[info.worker_id]
        if not group and not show_idle:
            continue
        if lines:
            lines.append("")
        count = f"{len(group)} task{'' if len(group) == 1 else 's'}"
        lines.append(
            f"worker {info.worker_id}  {info.host} pid {info.pid}  "
            f"up {duration(now - info.started)}  {count}"
        )
        if group:
            lines.append(
                f"  {'TASK ID':<{id_w}}  {'NAME':<{name_w}}  {'RUNNING':>7}{left_head}  ABORT"
            )
        for row in group:
            left = row.entry.time_left(now)
            left_cell = f"  {'-' if left is None else duration(left):>7}" if limited else ""
            lines.append(
                f"  {row.entry.task_id:<{id_w}}  {_fit(row.entry.task_name, name_w):<{name_w}}  "
                f"{duration(now - row.entry.started):>7}{left_cell}  {row.abort_state()}"
            )
    return lines


def status_dict(
    task_id: str,
    running: Row | None,
    request: RequestRecord | None,
    has_result: bool | None,
    now: float,
) -> dict[str, Any]:
    """The ``status --json`` object; ``state`` sums it up (:func:`task_state`)."""
    state = task_state(running is not None, request, has_result)
    if state in FINAL:
        running = None  # the entry of an attempt that already stopped (see task_state)
    return {
        "task_id": task_id,
        "state": state,
        "running": None if running is None else running.to_dict(now),
        "abort_request": None if request is None else request_fields(request),
        "has_result": has_result,
    }


def status_lines(status: Mapping[str, Any], now: float, has_result_backend: bool) -> list[str]:
    """``status`` as text: a headline, then the abort request if there is one."""
    task_id, state = status["task_id"], status["state"]
    running, request = status["running"], status["abort_request"]
    if running is not None:
        head = (
            f"running: {running['task_name']} on worker {running['worker']} "
            f"({running['host']} pid {running['pid']}) for {duration(running['running_for_s'])}"
        )
    elif state == "aborted":
        head = f"aborted: cancelled on worker {request['worker'] or '?'}"
    elif state == "revoked":
        head = "revoked: it had not started and never will"
    elif state == "finished":
        head = "finished: it has a result"
    elif state == "requested":
        head = "abort requested, not running: it will not start"
    elif has_result_backend:
        head = "not known: not running, no abort request, no result"
    else:
        head = (
            "not known: not running, no abort request "
            "(queued, finished or never sent; --broker can tell finished tasks)"
        )
    lines = [f"task {task_id}", f"  {head}"]
    if running is not None and running["time_limit_s"] is not None:
        soft = running["soft_time_limit_s"]
        lines.append(
            f"  time limit {duration(running['time_limit_s'])}"
            + (f" (soft {duration(soft)})" if soft is not None else "")
            + f", {duration(running['time_left_s'])} left"
        )
    elif running is not None and running["soft_time_limit_s"] is not None:
        lines.append(f"  soft time limit {duration(running['soft_time_limit_s'])}")
    if request is not None:
        reason = f", reason: {request['reason']!r}" if request["reason"] else ""
        pending = " (waiting for the worker)" if running is not None else ""
        lines.append(
            f"  abort requested {duration(now - request['requested_at'])} ago "
            f"by {request['requested_by'] or '?'}{reason}{pending}"
        )
    return lines
