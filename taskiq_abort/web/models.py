"""The operator API's request and response bodies (pydantic), as its OpenAPI schema shows them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from taskiq_abort._read.state import TaskStateName
from taskiq_abort._wire.protocol import MAX_GRACE, MAX_REASON_LENGTH, MAX_TASK_ID_LENGTH

MAX_TIMEOUT = 60.0
"""Longest an HTTP caller may ask the server to wait for a worker's confirmation, in seconds."""

AbortStatusName = Literal["aborted", "revoked", "finished", "unconfirmed"]


def _storable(text: str | None) -> str | None:
    """Refuse text Redis cannot store as UTF-8 (a lone surrogate from ``"\\ud800"`` in JSON)."""
    if text is not None:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return text


class RunningTask(BaseModel):
    """A task a live worker is running."""

    task_id: str
    task_name: str
    worker: str = Field(description="the worker process that runs it (host-pid-xxxxxx)")
    host: str
    pid: int
    started: float = Field(description="Unix time the attempt started")
    running_for_s: float
    soft_time_limit_s: float | None = Field(
        default=None, description="its soft time limit, seconds from its start"
    )
    time_limit_s: float | None = Field(
        default=None, description="its hard time limit, seconds from its start"
    )
    time_left_s: float | None = Field(default=None, description="seconds to its hard limit")
    abort_requested: bool
    abort_reason: str | None = None
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="its indexed labels (AbortMiddleware(index_labels=...), and abort_parent, "
        "abort_root for a task kicked by a running task)",
    )
    parent: str | None = Field(
        default=None, description="the id of the running task that kicked it, if one did"
    )


class TaskPage(BaseModel):
    """One page of the running tasks, oldest first within each worker."""

    tasks: list[RunningTask]
    total: int = Field(description="running tasks matching the filters, on every page")
    offset: int
    limit: int


class Worker(BaseModel):
    """A live worker process: registered, and its lease not expired."""

    worker_id: str
    host: str
    pid: int
    started: float = Field(description="Unix time the worker registered")
    up_s: float
    running: int = Field(description="tasks it runs now")


class WorkerList(BaseModel):
    workers: list[Worker]
    running: int = Field(description="tasks running on all of them")


class AbortRequestInfo(BaseModel):
    """A stored abort request."""

    reason: str | None
    requested_at: float
    requested_by: str
    outcome: str | None = Field(description="aborted, revoked, or null while pending")
    worker: str | None


class TaskState(BaseModel):
    """What is known of one task: running where, abort requested, outcome, or nothing."""

    task_id: str
    state: TaskStateName
    running: RunningTask | None = None
    abort_request: AbortRequestInfo | None = None
    has_result: bool | None = Field(
        None, description="whether the result backend holds a result (null: no result backend)"
    )


class AbortBody(BaseModel):
    """``POST /tasks/{task_id}/abort``."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(
        None, max_length=MAX_REASON_LENGTH, description="stored in the task's TaskAbortedError"
    )
    wait: bool = Field(True, description="wait for the worker's confirmation")
    timeout: float | None = Field(
        None, ge=0, le=MAX_TIMEOUT, description="seconds to wait (default: abort_timeout)"
    )
    grace: float | None = Field(
        None,
        ge=0,
        le=MAX_GRACE,
        description="seconds a running task may take to stop on its own before it is cancelled",
    )

    cascade: bool = Field(
        False, description="also abort every task it fanned out, running or queued"
    )

    _check_reason = field_validator("reason")(_storable)


class WhereBody(BaseModel):
    """``POST /tasks/abort-where``: every task carrying these indexed labels, running now or
    starting until the rule expires."""

    model_config = ConfigDict(extra="forbid")

    labels: dict[str, str] = Field(
        min_length=1, description="indexed labels a task must all carry (name: value)"
    )
    task_name: str | None = Field(None, min_length=1, max_length=MAX_TASK_ID_LENGTH)
    confirm: bool = Field(description="must be true: a bulk abort is never implicit")
    reason: str | None = Field(None, max_length=MAX_REASON_LENGTH)
    ttl: float | None = Field(
        None,
        gt=0,
        le=10 * 365 * 86_400,
        description="seconds the rule lives (default: request_ttl)",
    )
    wait: bool = True
    timeout: float | None = Field(None, ge=0, le=MAX_TIMEOUT)
    grace: float | None = Field(None, ge=0, le=MAX_GRACE)

    _check_text = field_validator("task_name", "reason")(_storable)

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, labels: dict[str, str]) -> dict[str, str]:
        for name, value in labels.items():
            _storable(name)
            _storable(value)
        return labels


class BulkAbortBody(BaseModel):
    """``POST /tasks/abort``: every running task with this name."""

    model_config = ConfigDict(extra="forbid")

    task_name: str = Field(min_length=1, max_length=MAX_TASK_ID_LENGTH)
    confirm: bool = Field(description="must be true: a bulk abort is never implicit")
    reason: str | None = Field(None, max_length=MAX_REASON_LENGTH)
    wait: bool = True
    timeout: float | None = Field(None, ge=0, le=MAX_TIMEOUT)
    grace: float | None = Field(None, ge=0, le=MAX_GRACE)

    _check_text = field_validator("task_name", "reason")(_storable)


class Outcome(BaseModel):
    """``AbortOutcome.to_dict()``."""

    task_id: str
    status: AbortStatusName
    worker: str | None
    reason: str | None
    elapsed_ms: float
    forced: bool = Field(False, description="aborted after its grace period ran out")
    descendants: int = Field(0, description="with cascade: its running descendants stopped")


class BulkAbortResult(BaseModel):
    task_name: str
    matched: int = Field(description="running tasks with this name when the request came")
    counts: dict[str, int] = Field(description="outcomes by status; 'failed' for errors")
    outcomes: list[Outcome]


class Rule(BaseModel):
    """An abort rule (``AbortRule.to_dict()``)."""

    rule_id: str
    labels: dict[str, str]
    task_name: str | None
    reason: str
    created_at: float
    expires_at: float
    requested_by: str


class RuleList(BaseModel):
    rules: list[Rule] = Field(description="the rules in force, soonest to expire first")
    total: int = Field(description="rules in force, beyond `limit` too")


class RuleCancelled(BaseModel):
    rule_id: str
    cancelled: bool = Field(description="always true: an unknown rule is a 404")


class WhereResult(BaseModel):
    rule: Rule
    matched: int = Field(description="running tasks matching when the rule was recorded")
    counts: dict[str, int] = Field(description="outcomes by status")
    outcomes: list[Outcome]


class RecentOutcome(Outcome):
    """An abort made through this server, with when it ended."""

    at: float = Field(description="Unix time the abort returned")


class RecentOutcomes(BaseModel):
    outcomes: list[RecentOutcome] = Field(description="newest first")


class Problem(BaseModel):
    """An error the caller can act on."""

    detail: str
