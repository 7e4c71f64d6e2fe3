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

    def encode(self) -> str:
        return json.dumps(
            {
                "v": VERSION,
                "type": _ABORT,
                "task_id": self.task_id,
                "reason": self.reason,
                "reply_to": self.reply_to,
                "at": self.at,
            },
            separators=(",", ":"),
            ensure_ascii=False,  # an emoji is 4 bytes, not a 12-byte escape pair
        )


@dataclass(frozen=True)
class ReplyMessage:
    """Published on the reply channel by the worker that held ``task_id``."""

    task_id: str
    status: str
    worker: str

    def encode(self) -> str:
        return json.dumps(
            {
                "v": VERSION,
                "type": _REPLY,
                "task_id": self.task_id,
                "status": self.status,
                "worker": self.worker,
            },
            separators=(",", ":"),
            ensure_ascii=False,  # an emoji is 4 bytes, not a 12-byte escape pair
        )


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

    >>> parse_abort(AbortMessage("t1", "why", "{app}:ctl:r:a1", 1700000000000).encode())
    AbortMessage(task_id='t1', reason='why', reply_to='{app}:ctl:r:a1', at=1700000000000)
    >>> parse_abort(b"not json") is None
    True
    """
    data = _load(raw, _ABORT)
    if data is None:
        return None
    reason, reply_to, at = data.get("reason"), data.get("reply_to", ""), data.get("at", 0)
    if reason is not None and not isinstance(reason, str):
        return None
    if not isinstance(reply_to, str) or len(reply_to) > 1024 or type(at) is not int:
        return None
    return AbortMessage(data["task_id"], clean_reason(reason), reply_to, at)


def parse_reply(raw: bytes | str) -> ReplyMessage | None:
    """Parse a worker's reply; ``None`` for anything malformed."""
    data = _load(raw, _REPLY)
    if data is None:
        return None
    status, worker = data.get("status"), data.get("worker")
    if status not in REPLY_STATUSES or not isinstance(worker, str):
        return None
    return ReplyMessage(data["task_id"], status, worker[:MAX_TASK_ID_LENGTH])
