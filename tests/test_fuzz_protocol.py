"""Fuzzing the control-message parsers and the task-id check (issue 4, point 6).

Whatever arrives on the control or reply channel, ``parse_abort``/``parse_reply`` (and the bulk
forms ``parse_aborts``/``parse_replies``) return messages or ``None``; they never raise, because
a raise in the worker's listener would end it.
"""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from taskiq_abort._wire.protocol import (
    MAX_MESSAGE_BYTES,
    MAX_REASON_LENGTH,
    MAX_TASK_ID_LENGTH,
    AbortMessage,
    ReplyMessage,
    parse_abort,
    parse_aborts,
    parse_replies,
    parse_reply,
    reply_payloads,
    validate_task_id,
)
from taskiq_abort.errors import InvalidTaskIdError

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
        "type": st.sampled_from(["abort", "reply", "abort_many", "replies", "ABORT", ""])
        | json_values,
        "task_id": st.text(max_size=300) | json_values,
        "reason": st.text(max_size=2000) | json_values,
        "status": st.sampled_from(["aborted", "finished", "unknown", "nope"]) | json_values,
        "worker": st.text(max_size=300) | json_values,
        "reply_to": st.text(max_size=300) | json_values,
        "at": st.integers() | json_values,
        "grace": st.sampled_from([0, 1.5, -1, 10**9, float("nan"), True]) | json_values,
        "task_ids": st.lists(st.text(max_size=30) | json_values, max_size=4) | json_values,
        "items": st.lists(
            st.lists(
                st.text(max_size=20) | st.sampled_from(["aborted", "unknown"]) | json_values,
                max_size=4,
            )
            | st.tuples(
                st.text(max_size=20), st.sampled_from(["aborted", "nope", ""]), st.booleans()
            ).map(list)
            | json_values,
            max_size=4,
        )
        | json_values,
    },
)


def _both_parse(raw: bytes | str) -> None:
    for parse, cls in ((parse_abort, AbortMessage), (parse_reply, ReplyMessage)):
        parsed = parse(raw)
        assert parsed is None or isinstance(parsed, cls)
        if parsed is not None:
            validate_task_id(parsed.task_id)  # a parsed id is always a valid one
    for parse_many, cls in ((parse_aborts, AbortMessage), (parse_replies, ReplyMessage)):
        many = parse_many(raw)
        assert many is None or (many and all(isinstance(m, cls) for m in many))
        for one in many or ():
            validate_task_id(one.task_id)


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
@given(near_miss)
def test_bulk_parsers_accept_only_well_typed_messages(data: dict[str, object]) -> None:
    raw = json.dumps(data)
    aborts, replies = parse_aborts(raw), parse_replies(raw)
    if aborts is not None and data["type"] == "abort_many":
        ids = data["task_ids"]
        assert isinstance(ids, list) and [m.task_id for m in aborts] == ids
    if replies is not None and data["type"] == "replies":
        items = data["items"]
        assert isinstance(items, list) and len(replies) == len(items)
        for reply, item in zip(replies, items, strict=True):
            assert [reply.task_id, reply.status, reply.forced] == item
            assert type(item[2]) is bool


task_ids = st.text(min_size=1, max_size=MAX_TASK_ID_LENGTH).filter(
    lambda s: not any(ord(c) < 32 or ord(c) == 127 for c in s)
)


@SETTINGS
@given(
    st.lists(
        st.tuples(task_ids, st.sampled_from(["aborted", "finished", "unknown"]), st.booleans()),
        min_size=1,
        max_size=120,
    ),
    st.text(max_size=64),
)
def test_reply_payloads_fit_and_round_trip(items: list[tuple[str, str, bool]], worker: str) -> None:
    """Confirmations for one channel: every message fits, and together they carry every item
    in order; a lone item is a plain `reply`."""
    payloads = reply_payloads(worker, items)
    assert all(len(p.encode()) <= MAX_MESSAGE_BYTES for p in payloads)
    got = [r for p in payloads for r in parse_replies(p) or ()]
    assert [(r.task_id, r.status, r.forced) for r in got] == items
    assert {r.worker for r in got} <= {worker[:MAX_TASK_ID_LENGTH]}
    if len(items) == 1:
        assert parse_reply(payloads[0]) is not None


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
        '{"v":2,"type":"abort_many","task_ids":[],"reason":null,"reply_to":"","at":1}',
        '{"v":2,"type":"abort_many","task_ids":["t1",""],"reason":null,"reply_to":"","at":1}',
        '{"v":2,"type":"abort_many","task_ids":"t1","reason":null,"reply_to":"","at":1}',
        '{"v":2,"type":"abort_many","task_ids":["t1"],"reason":null,"reply_to":"","at":1.5}',
        '{"v":2,"type":"abort_many","task_id":"t1","reason":null,"reply_to":"","at":1}',
        '{"v":1,"type":"abort_many","task_ids":["t1"],"reason":null,"reply_to":"","at":1}',
    ],
)
def test_wrong_versions_and_types_are_malformed(raw: str) -> None:
    assert parse_abort(raw) is None
    if "abort_many" in raw or '"abort"' in raw:
        assert parse_aborts(raw) is None


@pytest.mark.parametrize(
    "raw",
    [
        '{"v":2,"type":"replies","worker":"w","items":[]}',
        '{"v":2,"type":"replies","worker":"w","items":[["t1","aborted"]]}',
        '{"v":2,"type":"replies","worker":"w","items":[["t1","aborted",1]]}',
        '{"v":2,"type":"replies","worker":"w","items":[["t1","revoked",false]]}',
        '{"v":2,"type":"replies","worker":"w","items":[["t1",["aborted"],false]]}',
        '{"v":2,"type":"replies","worker":7,"items":[["t1","aborted",false]]}',
        '{"v":2,"type":"replies","worker":"w","items":[["","aborted",false]]}',
        '{"v":2,"type":"replies","worker":"w","items":{"t1":"aborted"}}',
        '{"v":2,"type":"reply","task_id":"t1","status":["aborted"],"worker":"w"}',
    ],
)
def test_malformed_replies(raw: str) -> None:
    assert parse_replies(raw) is None and parse_reply(raw) is None


@SETTINGS
@given(st.from_type(object) | st.text(max_size=400) | st.binary(max_size=10))
def test_validate_task_id_accepts_or_refuses_cleanly(value: object) -> None:
    with contextlib.suppress(InvalidTaskIdError):
        assert validate_task_id(value) == value
