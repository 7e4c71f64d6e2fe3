"""Fuzzing the control-message parsers and the task-id check (issue 4, point 6).

Whatever arrives on the control or reply channel, ``parse_abort``/``parse_reply`` return a message
or ``None``; they never raise, because a raise in the worker's listener would end it.
"""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from taskiq_abort.errors import InvalidTaskIdError
from taskiq_abort.protocol import (
    MAX_MESSAGE_BYTES,
    MAX_REASON_LENGTH,
    MAX_TASK_ID_LENGTH,
    AbortMessage,
    ReplyMessage,
    parse_abort,
    parse_reply,
    validate_task_id,
)

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
# Messages that look almost right: the real keys with values of any JSON type.
near_miss = st.fixed_dictionaries(
    {},
    optional={
        "v": st.sampled_from([1, 2, 3, 0, -1, True, 2.0, "2", None]) | json_values,
        "type": st.sampled_from(["abort", "reply", "ABORT", ""]) | json_values,
        "task_id": st.text(max_size=300) | json_values,
        "reason": st.text(max_size=2000) | json_values,
        "status": st.sampled_from(["aborted", "finished", "unknown", "nope"]) | json_values,
        "worker": st.text(max_size=300) | json_values,
        "reply_to": st.text(max_size=300) | json_values,
        "at": st.integers() | json_values,
    },
)


def _both_parse(raw: bytes | str) -> None:
    for parse, cls in ((parse_abort, AbortMessage), (parse_reply, ReplyMessage)):
        parsed = parse(raw)
        assert parsed is None or isinstance(parsed, cls)
        if parsed is not None:
            validate_task_id(parsed.task_id)  # a parsed id is always a valid one


@SETTINGS
@given(st.binary(max_size=MAX_MESSAGE_BYTES + 64))
@example(b"[" * 8000)  # nested deeper than the JSON decoder's recursion limit
@example(b'{"v":' * 2000)
@example(b"\xff\xfe\x00")
@example(b"null")
@example(b"x" * (MAX_MESSAGE_BYTES * 128))  # huge
def test_parsers_never_raise_on_bytes(raw: bytes) -> None:
    _both_parse(raw)


@SETTINGS
@given(st.text(max_size=2000))
def test_parsers_never_raise_on_text(raw: str) -> None:
    _both_parse(raw)


@SETTINGS
@given(near_miss)
def test_parsers_never_raise_on_near_misses(data: dict[str, object]) -> None:
    raw = json.dumps(data)
    _both_parse(raw)
    parsed = parse_abort(raw)
    if parsed is not None:  # only well-typed version-2 abort messages get through
        assert type(data["v"]) is int and data["v"] == 2 and data["type"] == "abort"
        assert isinstance(data["task_id"], str)
        assert data.get("reason") is None or isinstance(data["reason"], str)
        assert isinstance(data.get("reply_to", ""), str)
        assert type(data.get("at", 0)) is int


@SETTINGS
@given(
    st.text(min_size=1, max_size=MAX_TASK_ID_LENGTH).filter(
        lambda s: not any(ord(c) < 32 or ord(c) == 127 for c in s)
    ),
    st.none() | st.text(max_size=MAX_REASON_LENGTH * 2),
)
def test_abort_message_round_trip(task_id: str, reason: str | None) -> None:
    parsed = parse_abort(AbortMessage(task_id, reason).encode())
    if len(AbortMessage(task_id, reason).encode()) > MAX_MESSAGE_BYTES:
        assert parsed is None  # too big for the wire: dropped, never half-read
        return
    assert parsed is not None
    assert parsed.task_id == task_id
    assert parsed.reason == (None if reason is None else reason[:MAX_REASON_LENGTH])


@SETTINGS
@given(
    st.text(min_size=1, max_size=64).filter(lambda s: s.isprintable()),
    st.sampled_from(["aborted", "finished", "unknown"]),
    st.text(max_size=64),
)
def test_reply_round_trip(task_id: str, status: str, worker: str) -> None:
    assert parse_reply(ReplyMessage(task_id, status, worker).encode()) == ReplyMessage(
        task_id, status, worker
    )


@pytest.mark.parametrize(
    "raw",
    [
        '{"v":true,"type":"abort","task_id":"t1"}',
        '{"v":2.0,"type":"abort","task_id":"t1"}',
        '{"v":1,"type":"abort","task_id":"t1"}',
        '{"v":3,"type":"abort","task_id":"t1"}',
        '{"v":2,"type":"abort","task_id":1}',
        '{"v":2,"type":"abort","task_id":""}',
        '{"v":2,"type":"abort","task_id":"t1","reason":7}',
        '{"v":2,"type":"abort","task_id":"t1","reply_to":["x"]}',
        '{"v":2,"type":"abort","task_id":"t1","at":1.5}',
        '{"v":2,"type":"reply","task_id":"t1","status":"aborted","worker":"w"}',
        '["v",1]',
    ],
)
def test_wrong_versions_and_types_are_malformed(raw: str) -> None:
    assert parse_abort(raw) is None


@SETTINGS
@given(st.from_type(object) | st.text(max_size=400) | st.binary(max_size=10))
def test_validate_task_id_accepts_or_refuses_cleanly(value: object) -> None:
    with contextlib.suppress(InvalidTaskIdError):
        assert validate_task_id(value) == value
