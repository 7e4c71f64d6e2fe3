"""What callers get back: an abort's outcome, and the registry's workers and running tasks."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field


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

    @property
    def token(self) -> str:
        """The run id as stored: ``<run id>[;<soft>,<hard>]`` (limits in seconds, empty for
        none). A reader that predates limits takes the whole token for an opaque run id."""
        if self.soft_limit is None and self.time_limit is None:
            return self.run_id
        return f"{self.run_id};{_seconds(self.soft_limit)},{_seconds(self.time_limit)}"

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
        run_id, _, limits = token.partition(";")
        soft, _, hard = limits.partition(",")
        try:
            return cls(
                task_id, name or "?", run_id, float(started), worker, _limit(soft), _limit(hard)
            )
        except ValueError:
            return cls(task_id, "?", run_id, 0.0, worker)


def _seconds(limit: float | None) -> str:
    return "" if limit is None else f"{limit:g}"


def _limit(text: str) -> float | None:
    return float(text) if text else None


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
