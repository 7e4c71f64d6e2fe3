"""The control-plane wire format: versioned JSON messages, and task-id validation.

Documented for other implementations in ``docs/protocol.md``. Parsing never raises on bad
input from the wire: it returns ``None`` and the caller counts the message as malformed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from taskiq_abort.errors import InvalidTaskIdError

VERSION = 2
"""Version 2: abort messages go to the holding worker's own channel and name the channel to
reply on (``reply_to``); version 1 broadcast them."""
MAX_TASK_ID_LENGTH = 256
MAX_REASON_LENGTH = 1024
MAX_MESSAGE_BYTES = 8192
MAX_GRACE = 7 * 24 * 3600.0
"""Longest grace period, in seconds (a week): longer ones are refused by ``abort()``."""

_ABORT = "abort"
_REPLY = "reply"
REPLY_STATUSES = frozenset({"aborted", "finished", "unknown"})


def validate_task_id(task_id: object) -> str:
    """Return ``task_id`` if it can be a TaskIQ task id, else raise :class:`InvalidTaskIdError`.

    >>> validate_task_id("0f3c9a")
    '0f3c9a'
    >>> validate_task_id("")
    Traceback (most recent call last):
    ...
    taskiq_abort.errors.InvalidTaskIdError: invalid task id '': it is empty
    """
    if not isinstance(task_id, str):
        raise InvalidTaskIdError(f"invalid task id {task_id!r}: expected a string")
    problem = _task_id_problem(task_id)
    if problem:
        shown = task_id if len(task_id) <= 60 else task_id[:57] + "..."
        raise InvalidTaskIdError(f"invalid task id {shown!r}: {problem}")
    return task_id


def _task_id_problem(task_id: str) -> str | None:
    if not task_id:
        return "it is empty"
    if len(task_id) > MAX_TASK_ID_LENGTH:
        return f"it is longer than {MAX_TASK_ID_LENGTH} characters"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in task_id):
        return "it contains control characters"
    return None


def clean_reason(reason: object) -> str | None:
    """Validate a user-supplied reason (``str`` or ``None``), cutting very long ones."""
    if reason is None:
        return None
    if not isinstance(reason, str):
        raise TypeError(f"reason must be a str or None, not {type(reason).__name__}")
    return reason[:MAX_REASON_LENGTH]


@dataclass(frozen=True)
class AbortMessage:
    """Sent to a worker's own channel: "stop ``task_id``, and confirm on ``reply_to``"."""

    task_id: str
    reason: str | None = None
    reply_to: str = ""
    """The aborter's reply channel ('' : nobody waits for a reply)."""
    at: int = 0
    """When the request was recorded, ms since the epoch on the Redis clock (0: unknown)."""
    grace: float = 0.0
    """Seconds the task may take to stop on its own (its token is set at once) before it is
    cancelled; 0: cancel at once. Sent only when not 0, so older workers read the message."""

    def encode(self) -> str:
        data: dict[str, Any] = {
            "v": VERSION,
            "type": _ABORT,
            "task_id": self.task_id,
            "reason": self.reason,
            "reply_to": self.reply_to,
            "at": self.at,
        }
        if self.grace:
            data["grace"] = self.grace
        # ensure_ascii=False: an emoji is 4 bytes, not a 12-byte escape pair
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class ReplyMessage:
    """Published on the reply channel by the worker that held ``task_id``."""

    task_id: str
    status: str
    worker: str
    forced: bool = False
    """``aborted`` only after its grace period ran out (sent only when true)."""

    def encode(self) -> str:
        data: dict[str, Any] = {
            "v": VERSION,
            "type": _REPLY,
            "task_id": self.task_id,
            "status": self.status,
            "worker": self.worker,
        }
        if self.forced:
            data["forced"] = True
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def _load(raw: bytes | str, kind: str) -> dict[str, Any] | None:
    if len(raw) > MAX_MESSAGE_BYTES:
        return None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested thousands deep
        return None
    # ``type(...) is int``: JSON ``true`` and ``1.0`` compare equal to 1 but are not version 1.
    if not isinstance(data, dict) or type(data.get("v")) is not int or data["v"] != VERSION:
        return None
    if data.get("type") != kind:
        return None
    task_id = data.get("task_id")
    if not isinstance(task_id, str) or _task_id_problem(task_id):
        return None
    return data


def parse_abort(raw: bytes | str) -> AbortMessage | None:
    """Parse a control message; ``None`` for anything malformed.

    >>> parse_abort(AbortMessage("t1", "why", "{app}:ctl:r:a1", 1700000000000, 2.5).encode())
    AbortMessage(task_id='t1', reason='why', reply_to='{app}:ctl:r:a1', at=1700000000000, grace=2.5)
    >>> parse_abort(b"not json") is None
    True
    """
    data = _load(raw, _ABORT)
    if data is None:
        return None
    reason, reply_to, at = data.get("reason"), data.get("reply_to", ""), data.get("at", 0)
    grace = data.get("grace", 0)
    if reason is not None and not isinstance(reason, str):
        return None
    if not isinstance(reply_to, str) or len(reply_to) > 1024 or type(at) is not int:
        return None
    if type(grace) not in (int, float) or not 0 <= grace <= MAX_GRACE:  # NaN fails this too
        return None
    return AbortMessage(data["task_id"], clean_reason(reason), reply_to, at, float(grace))


def parse_reply(raw: bytes | str) -> ReplyMessage | None:
    """Parse a worker's reply; ``None`` for anything malformed."""
    data = _load(raw, _REPLY)
    if data is None:
        return None
    status, worker, forced = data.get("status"), data.get("worker"), data.get("forced", False)
    if status not in REPLY_STATUSES or not isinstance(worker, str) or type(forced) is not bool:
        return None
    return ReplyMessage(data["task_id"], status, worker[:MAX_TASK_ID_LENGTH], forced)


def check_grace(grace: object) -> float:
    """Validate a grace period in seconds (``None`` is 0: no grace)."""
    if grace is None:
        return 0.0
    if isinstance(grace, bool) or not isinstance(grace, (int, float)):
        raise TypeError(f"grace must be a number of seconds, not {type(grace).__name__}")
    if not 0 <= grace <= MAX_GRACE:  # NaN fails this too
        raise ValueError(f"grace must be between 0 and {MAX_GRACE:.0f} seconds, not {grace}")
    return float(grace)
