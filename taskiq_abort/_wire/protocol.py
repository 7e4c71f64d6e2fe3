"""The control-plane wire format: versioned JSON messages, and task-id and rule-id validation.

Documented for other implementations in ``docs/protocol.md``. Parsing never raises on bad
input from the wire: it returns ``None`` and the caller counts the message as malformed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from taskiq_abort.errors import InvalidTaskIdError

VERSION = 2
"""Version 2: abort messages go to the holding worker's own channel and name the channel to
reply on (``reply_to``); version 1 broadcast them."""
MAX_TASK_ID_LENGTH = 256
MAX_REASON_LENGTH = 1024
MAX_MESSAGE_BYTES = 8192
BATCH = 1000
"""Most ids per bulk call (``REQUEST_MANY``, ``CONFIRM_MANY``, a pipelined read): one call never
holds Redis for long (a few ms)."""
MAX_GRACE = 7 * 24 * 3600.0
"""Longest grace period, in seconds (a week): longer ones are refused by ``abort()``."""

_ABORT = "abort"
_ABORT_MANY = "abort_many"
_REPLY = "reply"
_REPLIES = "replies"
REPLY_STATUSES = frozenset({"aborted", "finished", "unknown"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
RULE_ID_PATTERN = r"^[0-9A-Za-z][0-9A-Za-z_-]{0,63}$"
"""What an abort rule id may be (``abort_where`` makes 12 hex digits); a key of its own. Not
"-" first: the CLI would read it as an option."""
_RULE_ID = re.compile(RULE_ID_PATTERN[1:-1])  # fullmatch: "$" would let a newline end it


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


def validate_rule_id(rule_id: object) -> str:
    """Return ``rule_id`` if it can be an abort rule's id, else raise ``ValueError``.

    >>> validate_rule_id("3f2a9c1b7d4e")
    '3f2a9c1b7d4e'
    >>> validate_rule_id("a b")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: invalid abort rule id 'a b': expected a letter or digit, then up to 63 more...
    """
    if not isinstance(rule_id, str) or not _RULE_ID.fullmatch(rule_id):
        shown = rule_id if not isinstance(rule_id, str) or len(rule_id) <= 60 else rule_id[:57]
        raise ValueError(
            f"invalid abort rule id {shown!r}: expected a letter or digit, then up to 63 more "
            "or '-', '_'"
        )
    return rule_id


def _task_id_problem(task_id: str) -> str | None:
    if not task_id:
        return "it is empty"
    if len(task_id) > MAX_TASK_ID_LENGTH:
        return f"it is longer than {MAX_TASK_ID_LENGTH} characters"
    if _CONTROL.search(task_id):
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
        return _dumps(data)


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
        return _dumps(data)


@dataclass(frozen=True)
class RepliesMessage:
    """Several confirmations for one reply channel, from the worker that held the tasks:
    ``items`` are ``(task_id, status, forced)``."""

    worker: str
    items: tuple[tuple[str, str, bool], ...]

    def encode(self) -> str:
        data = {"v": VERSION, "type": _REPLIES, "worker": self.worker, "items": self.items}
        return _dumps(data)


def _dumps(data: object) -> str:
    # ensure_ascii=False: an emoji is 4 bytes, not a 12-byte escape pair
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def _load(raw: bytes | str, kinds: tuple[str, ...]) -> dict[str, Any] | None:
    """The JSON object of a version-2 message of one of ``kinds``; ``None`` otherwise."""
    if len(raw) > MAX_MESSAGE_BYTES:
        return None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested thousands deep
        return None
    # ``type(...) is int``: JSON ``true`` and ``1.0`` compare equal to 1 but are not version 1.
    if not isinstance(data, dict) or type(data.get("v")) is not int or data["v"] != VERSION:
        return None
    if data.get("type") not in kinds:
        return None
    return data


def _is_task_id(value: object) -> bool:
    return isinstance(value, str) and not _task_id_problem(value)


def _task_ids(value: object) -> list[str] | None:
    """A non-empty JSON list of valid task ids."""
    if not isinstance(value, list) or not value or not all(_is_task_id(t) for t in value):
        return None
    return value


def _abort_fields(data: dict[str, Any]) -> tuple[str | None, str, int, float] | None:
    """``(reason, reply_to, at, grace)`` of an ``abort`` or ``abort_many`` message."""
    reason, reply_to, at = data.get("reason"), data.get("reply_to", ""), data.get("at", 0)
    grace = data.get("grace", 0)
    if reason is not None and not isinstance(reason, str):
        return None
    if not isinstance(reply_to, str) or len(reply_to) > 1024 or type(at) is not int:
        return None
    if type(grace) not in (int, float) or not 0 <= grace <= MAX_GRACE:  # NaN fails this too
        return None
    return clean_reason(reason), reply_to, at, float(grace)


def parse_abort(raw: bytes | str) -> AbortMessage | None:
    """Parse an ``abort`` message; ``None`` for anything malformed (``abort_many`` too: see
    :func:`parse_aborts`).

    >>> parse_abort(AbortMessage("t1", "why", "{app}:ctl:r:a1", 1700000000000, 2.5).encode())
    AbortMessage(task_id='t1', reason='why', reply_to='{app}:ctl:r:a1', at=1700000000000, grace=2.5)
    >>> parse_abort(b"not json") is None
    True
    """
    data = _load(raw, (_ABORT,))
    if data is None or not _is_task_id(data.get("task_id")):
        return None
    fields = _abort_fields(data)
    return None if fields is None else AbortMessage(data["task_id"], *fields)


def parse_aborts(raw: bytes | str) -> list[AbortMessage] | None:
    """Parse a worker's control message, ``abort`` or ``abort_many``, into one
    :class:`AbortMessage` per task; ``None`` for anything malformed (never raises).

    >>> raw = '{"v":2,"type":"abort_many","task_ids":["a","b"],"reason":null,"reply_to":"","at":5}'
    >>> [m.task_id for m in parse_aborts(raw)]
    ['a', 'b']
    """
    data = _load(raw, (_ABORT, _ABORT_MANY))
    if data is None:
        return None
    if data["type"] == _ABORT:
        ids = [data["task_id"]] if _is_task_id(data.get("task_id")) else None
    else:
        ids = _task_ids(data.get("task_ids"))
    fields = _abort_fields(data)
    if ids is None or fields is None:
        return None
    return [AbortMessage(task_id, *fields) for task_id in ids]


def _reply_item(item: object, worker: str) -> ReplyMessage | None:
    if not isinstance(item, list) or len(item) != 3:
        return None
    task_id, status, forced = item
    if not _is_task_id(task_id) or type(forced) is not bool:
        return None
    if not isinstance(status, str) or status not in REPLY_STATUSES:
        return None
    return ReplyMessage(task_id, status, worker, forced)


def parse_reply(raw: bytes | str) -> ReplyMessage | None:
    """Parse a worker's ``reply``; ``None`` for anything malformed (``replies`` too: see
    :func:`parse_replies`)."""
    data = _load(raw, (_REPLY,))
    if data is None:
        return None
    return _reply(data)


def _reply(data: dict[str, Any]) -> ReplyMessage | None:
    worker = data.get("worker")
    if not isinstance(worker, str):
        return None
    item = [data.get("task_id"), data.get("status"), data.get("forced", False)]
    return _reply_item(item, worker[:MAX_TASK_ID_LENGTH])


def parse_replies(raw: bytes | str) -> list[ReplyMessage] | None:
    """Parse a worker's confirmation, ``reply`` or ``replies``, into one
    :class:`ReplyMessage` per task; ``None`` for anything malformed (never raises).

    >>> [r.task_id for r in parse_replies(reply_payloads("w1", [("a", "aborted", True)] * 2)[0])]
    ['a', 'a']
    """
    data = _load(raw, (_REPLY, _REPLIES))
    if data is None:
        return None
    if data["type"] == _REPLY:
        one = _reply(data)
        return None if one is None else [one]
    worker, items = data.get("worker"), data.get("items")
    if not isinstance(worker, str) or not isinstance(items, list) or not items:
        return None
    replies = []
    for item in items:
        reply = _reply_item(item, worker[:MAX_TASK_ID_LENGTH])
        if reply is None:
            return None
        replies.append(reply)
    return replies


def reply_payloads(worker: str, items: Sequence[tuple[str, str, bool]]) -> list[str]:
    """The confirmations ``(task_id, status, forced)`` for one reply channel, as messages of
    at most :data:`MAX_MESSAGE_BYTES`: a ``reply`` for a lone one (what a single abort has
    always received), else ``replies`` carrying as many as fit.

    >>> reply_payloads("w1", [("t1", "aborted", False)])
    ['{"v":2,"type":"reply","task_id":"t1","status":"aborted","worker":"w1"}']
    >>> reply_payloads("w1", [("t1", "aborted", False), ("t2", "finished", False)])
    ['{"v":2,"type":"replies","worker":"w1","items":[["t1","aborted",false],["t2","finished",false]]}']
    """
    chunks: list[list[tuple[str, str, bool]]] = []
    base = len(RepliesMessage(worker, ()).encode().encode())
    size = base
    for item in items:
        item_size = len(_dumps(list(item)).encode()) + 1  # and a comma
        if not chunks or size + item_size > MAX_MESSAGE_BYTES:
            chunks.append([])
            size = base
        chunks[-1].append(item)
        size += item_size
    return [
        ReplyMessage(chunk[0][0], chunk[0][1], worker, chunk[0][2]).encode()
        if len(chunk) == 1
        else RepliesMessage(worker, tuple(chunk)).encode()
        for chunk in chunks
    ]


def check_grace(grace: object) -> float:
    """Validate a grace period in seconds (``None`` is 0: no grace)."""
    if grace is None:
        return 0.0
    if isinstance(grace, bool) or not isinstance(grace, (int, float)):
        raise TypeError(f"grace must be a number of seconds, not {type(grace).__name__}")
    if not 0 <= grace <= MAX_GRACE:  # NaN fails this too
        raise ValueError(f"grace must be between 0 and {MAX_GRACE:.0f} seconds, not {grace}")
    return float(grace)


def expired_reason(late: float) -> str:
    """The reason stored with a task refused at its start because its ``expires`` deadline had
    passed (``late``: by how many seconds, on the Redis clock).

    >>> expired_reason(2.5)
    'expired: not started by its deadline (2.500 s late)'
    """
    return f"expired: not started by its deadline ({late:.3f} s late)"
