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

    def encode(self) -> str:
        # "<run id> <started> <task name>": the name goes last, so it may contain spaces.
        # Plain text, not JSON: this runs for every task start.
        return f"{self.run_id} {self.started:.3f} {self.task_name}"

    @classmethod
    def decode(cls, task_id: str, raw: str, worker: str = "") -> RunningEntry:
        run_id, _, rest = raw.partition(" ")
        started, _, name = rest.partition(" ")
        try:
            return cls(task_id, name or "?", run_id, float(started), worker)
        except ValueError:
            return cls(task_id, "?", run_id, 0.0, worker)


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
