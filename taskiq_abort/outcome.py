"""What callers get back: an abort's outcome, and the registry's workers and running tasks."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from urllib.parse import quote, unquote


class AbortStatus(str, enum.Enum):
    """How an abort request ended. A ``str`` enum: ``AbortStatus.ABORTED == "aborted"``."""

    ABORTED = "aborted"
    """The task was running; its worker cancelled it, stored ``TaskAbortedError`` and confirmed."""
    REVOKED = "revoked"
    """The task was not running; it will never start, and ``TaskAbortedError`` is its result."""
    FINISHED = "finished"
    """The task already had a result; nothing changed."""
    UNCONFIRMED = "unconfirmed"
    """A worker holds the task but did not confirm within the timeout (or ``wait=False``)."""

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class AbortOutcome:
    """The answer of :func:`taskiq_abort.abort` and ``task.abort()``.

    ``worker`` names the worker that held the task when that is known
    (``"host-pid-xxxxxx"``), ``elapsed`` is the wall time of the abort call in seconds.
    """

    task_id: str
    status: AbortStatus
    worker: str | None = None
    reason: str | None = None
    elapsed: float = 0.0
    forced: bool = False
    """``aborted`` with a grace period that ran out: the task did not stop on its own and was
    cancelled (``abort(..., grace=...)``)."""
    descendants: int = 0
    """With ``abort(..., cascade=True)``: how many of its running descendants were stopped
    (``aborted``, or ``revoked`` if one ended meanwhile); queued ones are refused at their
    start, uncounted."""

    @property
    def ok(self) -> bool:
        """True when the task will not run (on): ``aborted`` or ``revoked``."""
        return self.status in (AbortStatus.ABORTED, AbortStatus.REVOKED)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (the CLI's ``--json`` output)."""
        return {
            "task_id": self.task_id,
            "status": self.status.value,
            "worker": self.worker,
            "reason": self.reason,
            "elapsed_ms": round(self.elapsed * 1000, 3),
            "forced": self.forced,
            "descendants": self.descendants,
        }


@dataclass(frozen=True)
class RunningEntry:
    """One task a worker is running, as stored in the registry."""

    task_id: str
    task_name: str
    run_id: str
    started: float
    worker: str = ""
    soft_limit: float | None = None
    """Its ``soft_time_limit``, seconds from its start (``None``: none)."""
    time_limit: float | None = None
    """Its ``time_limit`` (hard), seconds from its start (``None``: none)."""
    expires_at: float | None = field(default=None, compare=False)
    """Its ``expires`` deadline (seconds since the epoch), for the start check; not stored."""
    labels: tuple[tuple[str, str], ...] = ()
    """Its indexed labels (``AbortMiddleware(index_labels=...)``), as ``(name, text)`` pairs."""

    @cached_property
    def token(self) -> str:
        """The run id as stored: ``<run id>[;<soft>,<hard>[;<labels>]]`` (limits in seconds,
        empty for none; labels ``name=value&...``, percent-encoded, so never a space). A reader
        that predates limits takes the whole token for an opaque run id."""
        if not self.labels and self.soft_limit is None and self.time_limit is None:
            return self.run_id
        token = f"{self.run_id};{_seconds(self.soft_limit)},{_seconds(self.time_limit)}"
        if self.labels:
            token += ";" + "&".join(self.pairs)
        return token

    @cached_property
    def pairs(self) -> list[str]:
        """Its labels as the start check compares them (:func:`label_pairs`)."""
        return label_pairs(self.labels)

    @cached_property
    def label_map(self) -> dict[str, str]:
        """Its indexed labels by name (read, not changed: computed once per entry)."""
        return dict(self.labels)

    def time_left(self, now: float) -> float | None:
        """Seconds until its hard time limit (never below 0), ``None`` without one."""
        if self.time_limit is None:
            return None
        return max(0.0, self.started + self.time_limit - now)

    def encode(self) -> str:
        # "<run token> <started> <task name>": the name goes last, so it may contain spaces.
        # Plain text, not JSON: this runs for every task start.
        return f"{self.token} {self.started:.3f} {self.task_name}"

    @classmethod
    def decode(cls, task_id: str, raw: str, worker: str = "") -> RunningEntry:
        token, _, rest = raw.partition(" ")
        started, _, name = rest.partition(" ")
        run_id, _, extra = token.partition(";")
        limits, _, labels = extra.partition(";")
        soft, _, hard = limits.partition(",")
        try:
            return cls(
                task_id, name or "?", run_id, float(started), worker, _limit(soft), _limit(hard),
                labels=decode_labels(labels),
            )  # fmt: skip
        except ValueError:
            return cls(task_id, "?", run_id, 0.0, worker)


def _seconds(limit: float | None) -> str:
    return "" if limit is None else f"{limit:g}"


def _limit(text: str) -> float | None:
    return float(text) if text else None


def label_pairs(labels: Iterable[tuple[str, str]]) -> list[str]:
    """``name=value`` per label, both percent-encoded (no space, ``;``, ``&`` or ``=``
    inside): how the registry token, the start check and a rule's hash all write labels, so
    that the start check matches a rule by comparing these strings."""
    return [f"{_encoded(name)}={_encoded(value)}" for name, value in labels]


_PLAIN = re.compile(r"[A-Za-z0-9_.~-]*")  # what quote() leaves as it is


def _encoded(text: str) -> str:
    return text if _PLAIN.fullmatch(text) else quote(text, safe="")


def encode_labels(labels: Iterable[tuple[str, str]]) -> str:
    return "&".join(label_pairs(labels))


def decode_labels(text: str) -> tuple[tuple[str, str], ...]:
    pairs = (item.partition("=") for item in text.split("&") if item)
    return tuple((unquote(name), unquote(value)) for name, _, value in pairs)


@dataclass(frozen=True)
class WorkerInfo:
    """A live worker process and what it is running."""

    worker_id: str
    host: str
    pid: int
    started: float
    tasks: list[RunningEntry] = field(default_factory=list)

    @classmethod
    def from_info(
        cls, worker_id: str, info: dict[str, str], tasks: Iterable[RunningEntry]
    ) -> WorkerInfo:
        """From stored info fields (``host``, ``pid``, ``started``); oldest task first."""
        return cls(
            worker_id=worker_id,
            host=info.get("host", "?"),
            pid=int(info.get("pid", 0) or 0),
            started=float(info.get("started", 0) or 0),
            tasks=sorted(tasks, key=lambda entry: entry.started),
        )


@dataclass(frozen=True)
class AbortRule:
    """A stored abort rule (:func:`taskiq_abort.abort_where`): until ``expires_at``, every task
    whose indexed labels include all of ``labels`` (and named ``task_name``, when given) is
    refused at its start, its result ``TaskAbortedError`` with ``reason``."""

    rule_id: str
    labels: dict[str, str]
    task_name: str | None
    reason: str
    """The text stored in each refused or aborted task's ``TaskAbortedError``; names the rule."""
    created_at: float
    """Seconds since the epoch (the control plane's clock)."""
    expires_at: float
    """Seconds since the epoch (the control plane's clock)."""
    requested_by: str = ""

    def matches(self, entry: RunningEntry) -> bool:
        """Whether a task with this registry entry falls under the rule."""
        if self.task_name is not None and entry.task_name != self.task_name:
            return False
        have = entry.label_map
        return all(have.get(name) == value for name, value in self.labels.items())

    def to_dict(self) -> dict[str, object]:
        return {
            "rule_id": self.rule_id,
            "labels": dict(self.labels),
            "task_name": self.task_name,
            "reason": self.reason,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "requested_by": self.requested_by,
        }


@dataclass(frozen=True)
class WhereOutcome:
    """The answer of :func:`taskiq_abort.abort_where`: the rule recorded, and the outcome of
    each matching task that was running when it was (one per task, as ``abort_many`` gives)."""

    rule: AbortRule
    running: list[AbortOutcome] = field(default_factory=list)

    @property
    def aborted(self) -> list[AbortOutcome]:
        """The running tasks stopped (``aborted``, or ``revoked`` if one ended meanwhile)."""
        return [outcome for outcome in self.running if outcome.ok]

    @property
    def unconfirmed(self) -> list[AbortOutcome]:
        """The running tasks whose worker did not confirm in time (the rule still stands)."""
        return [o for o in self.running if o.status is AbortStatus.UNCONFIRMED]

    def to_dict(self) -> dict[str, object]:
        return {"rule": self.rule.to_dict(), "running": [o.to_dict() for o in self.running]}
