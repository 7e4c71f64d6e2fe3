"""What an abort request achieved."""

from __future__ import annotations

import enum
from dataclasses import dataclass


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
