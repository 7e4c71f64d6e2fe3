"""docs/protocol.md as a contract: what a real worker and a real aborter put in Redis and on
pub/sub, read live, must be what the document says, so that another implementation (or a later
version) can rely on the document alone.

The test is driven by the document, not by a copy of it: change the layout in the code *and*
in docs/protocol.md and this test follows. It relies on this much of the document's format:

- a ``## Keys`` section holding a markdown table whose header names the columns ``key``,
  ``type``, ``content`` and ``lifetime`` (others are ignored, order is free);
  - ``key``: the first backticked pattern, ``P`` standing for the prefix and ``<name>`` for a
    variable part (``P:req:<task_id>``). Every key the add-on keeps must match exactly one row,
    and every row must be seen in the scenario below;
  - ``type``: the Redis type (``hash``, ``zset``, ``string``, ``set``, ``list``);
  - ``content`` for a hash, either its fields, each backticked at the top level (outside
    parentheses) and optionally followed by ``(a description)``; or ``field = <what>, value =
    `<a> <b> <rest>``` for a hash of one entry per task (each ``<part>`` one word, the last
    the rest of the string, `` `part` is ...`` describing one). For a zset, ``member =
    <what>, score = <what> (description)``;
  - descriptions are checked by what they say: ``ms`` + ``Redis clock`` (integer milliseconds
    near Redis's clock), ``s since the epoch`` / ``seconds since the epoch`` (near now, with
    ``N decimals`` if stated), two or more backticked words (one of them), one backticked
    shape such as ``host:pid`` (the same separators), ``optional``, ``once known``, ``empty``,
    ``if``/``when`` (the field may be missing);
  - ``lifetime``: a leading backticked option (``request_ttl``, ``lease``), optionally
    multiplied (``3 x `lease` ``, with a multiplication sign), means the key has a TTL of at
    most that;
- "Worker ids are `<hostname>-<pid>-<6 hex>`": the worker id format;
- a ``## Channels`` section holding a table with columns ``channel`` (the first backticked
  pattern; ``<name>`` may name an earlier row by its last segment, as ``<control>:reply``
  does) and ``messages`` (the backticked message types sent on it), then ``json`` code blocks
  with one example message per line, and bullets saying ``"at most N bytes"``, which keys may
  be `` `null` `` ("`key`: string or `null`"), and which values a key takes
  ("`status`: `a` (...), `b` or `c`").
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from taskiq import AsyncBroker

from taskiq_abort import AbortStatus, abort, abort_many, abort_where, find_middleware
from taskiq_abort._wire.protocol import RULE_ID_PATTERN, parse_aborts, parse_replies
from tests.app import make_broker
from tests.conftest import ROOT, Events, WorkerProcess
from tests.faultkit import started

pytestmark = pytest.mark.anyio

DOC = ROOT / "docs" / "protocol.md"
APP_KEYS = (":queue", ":result", ":test-events", ":group")  # the test app's, not the add-on's


# --- reading the document -----------------------------------------------------------------------
def section(text: str, title: str) -> str:
    """The text of the ``## title`` section, up to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(title)}\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"docs/protocol.md has no '## {title}' section"
    return match.group(1)


def table(text: str) -> list[dict[str, str]]:
    """The first markdown table in ``text``: one dict per row, keyed by lowercase header."""
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("|")]
    assert len(lines) >= 3, f"no markdown table in:\n{text[:300]}"
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    header = [h.lower() for h in cells[0]]
    return [dict(zip(header, row, strict=False)) for row in cells[2:]]


def ticks(text: str) -> list[tuple[str, str]]:
    """Backticked tokens outside parentheses, each with the ``(description)`` right after it."""
    found: list[tuple[str, str]] = []
    depth, i = 0, 0
    while i < len(text):
        ch = text[i]
        if ch == "`":
            end = text.index("`", i + 1)
            token, i = text[i + 1 : end], end + 1
            if depth == 0:
                found.append((token, _parenthetical(text, i)))
            continue
        depth += {"(": 1, ")": -1}.get(ch, 0)
        i += 1
    return found


def _parenthetical(text: str, start: int) -> str:
    rest = text[start:]
    if not rest.lstrip().startswith("("):
        return ""
    begin = start + len(rest) - len(rest.lstrip())
    depth = 0
    for j in range(begin, len(text)):
        depth += {"(": 1, ")": -1}.get(text[j], 0)
        if depth == 0:
            return text[begin + 1 : j]
    return text[begin + 1 :]


RULE_ID = {"rule_id": RULE_ID_PATTERN[1:-1]}  # a rule's id, not the index key beside it


def pattern(template: str, prefix: str, named: dict[str, str] | None = None) -> re.Pattern[str]:
    """``P:req:<task_id>`` as a regex: ``P`` is the prefix, ``<x>`` a named variable part."""
    named = named or {}
    out, pos = "", 0
    for match in re.finditer(r"<([^<>]+)>|(?<![\w])P(?![\w])", template):
        out += re.escape(template[pos : match.start()])
        if match.group(1) is None:
            out += re.escape(prefix)
        elif match.group(1) in named:
            out += f"(?:{named[match.group(1)]})"
        else:
            name = re.sub(r"\W", "_", match.group(1))
            out += f"(?P<{name}>.+?)" if f"(?P<{name}>" not in out else ".+?"
        pos = match.end()
    return re.compile(out + re.escape(template[pos:]) + r"\Z")


def worker_id_pattern(text: str) -> re.Pattern[str]:
    match = re.search(r"Worker ids are `([^`]+)`", text)
    assert match, "docs/protocol.md no longer says 'Worker ids are `...`'"
    regex = ""
    for part in re.split(r"(<[^<>]+>)", match.group(1)):
        hexes = re.fullmatch(r"<(\d+) hex>", part)
        if hexes:
            regex += f"[0-9a-f]{{{hexes.group(1)}}}"
        elif part == "<pid>":
            regex += r"\d+"
        elif part.startswith("<"):
            regex += ".+"
        else:
            regex += re.escape(part)
    return re.compile(regex + r"\Z")


def may_be_missing(description: str) -> bool:
    return bool(re.search(r"optional|once known|empty|\bif\b|\bwhen\b", description))


@dataclass
class Clocks:
    redis_ms: int
    now: float


def check_value(what: str, value: str, description: str, clocks: Clocks) -> None:
    """Check ``value`` against what its description in the document says."""
    if "ms" in re.findall(r"\w+", description) and "Redis clock" in description:
        assert re.fullmatch(r"\d+", value), f"{what}: {value!r} is not integer milliseconds"
        assert abs(int(value) - clocks.redis_ms) < 120_000, f"{what}: {value} is not near now"
    if re.search(r"\bs(econds)? since the epoch", description):
        assert abs(float(value) - clocks.now) < 120, f"{what}: {value} is not near now"
        decimals = re.search(r"(\d+) decimals", description)
        if decimals:
            assert re.fullmatch(rf"\d+\.\d{{{decimals.group(1)}}}", value), (what, value)
    words = [t for t, _ in ticks(description)]
    if len(set(words)) >= 2 and all(re.fullmatch(r"\w+", w) for w in words):
        assert value in words, f"{what}: {value!r} is not one of {words}"
    elif len(words) == 1 and re.search(r"\W", words[0]):  # a shape, e.g. `host:pid`
        shape = re.sub(r"\w+", lambda m: r"\d+" if m.group() == "pid" else ".+", words[0])
        assert re.fullmatch(shape, value), f"{what}: {value!r} is not shaped like {words[0]}"


# --- the live scenario --------------------------------------------------------------------------
@dataclass
class Live:
    prefix: str
    keys: dict[str, str] = field(default_factory=dict)  # key -> type, as seen
    hashes: dict[str, dict[str, str]] = field(default_factory=dict)
    zsets: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    ttls: dict[str, int] = field(default_factory=dict)  # key -> PTTL in ms
    messages: list[tuple[str, str]] = field(default_factory=list)  # (channel, raw)
    task_ids: set[str] = field(default_factory=set)
    task_names: dict[str, str] = field(default_factory=dict)
    worker_ids: set[str] = field(default_factory=set)

    def snapshot(self, client: redis.Redis) -> None:
        """Every key of the add-on under this prefix, with its type, content and TTL."""
        for key in client.scan_iter(match=f"*{self.prefix}*", count=1000):
            if any(marker in key for marker in APP_KEYS):
                continue
            kind = client.type(key)
            if kind == "none":  # gone since the scan (a finish emptied it): the last read stands
                continue
            if kind == "hash":
                data = client.hgetall(key)
                if not data:  # emptied between TYPE and HGETALL: Redis has no empty hashes
                    continue
                self.hashes[key] = data
            elif kind == "zset":
                self.zsets[key] = client.zrange(key, 0, -1, withscores=True)
            self.keys[key] = kind
            self.ttls[key] = client.pttl(key)


def _task_ids(message: dict[str, Any]) -> list[str]:
    """The task ids a message is about: ``task_id``, ``task_ids`` or ``items``' first fields."""
    if "task_id" in message:
        return [message["task_id"]]
    if "task_ids" in message:
        return list(message["task_ids"])
    return [item[0] for item in message.get("items", ())]


def _drain(pubsub: Any, live: Live, until: set[tuple[str, str]], timeout: float = 30.0) -> None:
    """Read messages until every (type, task id) in ``until`` was seen."""
    deadline = time.monotonic() + timeout
    seen: set[tuple[str, str]] = set()
    while not until <= seen:
        assert time.monotonic() < deadline, f"missing messages: {until - seen}: {live.messages}"
        message = pubsub.get_message(timeout=1.0)
        if message is None or message["type"] != "pmessage":
            continue
        live.messages.append((message["channel"], message["data"]))
        data = json.loads(message["data"])
        kind = {"replies": "reply"}.get(data.get("type"), data.get("type"))  # a confirmation
        seen |= {(kind, task_id) for task_id in _task_ids(data)}


@pytest.fixture
async def live(
    client: AsyncBroker,
    worker_factory: type[WorkerProcess],
    events: Events,
    rclient: redis.Redis,
    prefix: str,
    redis_url: str,
) -> Live:
    """A worker runs a task (keys read while it runs), the task is aborted with a reason, an id
    nobody sent is revoked without one, two more running tasks are aborted in bulk
    (``abort_many``); every message on the prefix's channels is recorded."""
    worker_factory().start()
    state = Live(prefix)
    pubsub = rclient.pubsub()
    pubsub.psubscribe(f"*{prefix}*")
    try:
        while (m := pubsub.get_message(timeout=1.0)) is None or m["type"] != "psubscribe":
            pass
        running = await client.find_task("sleeper").kiq(60)
        bulk = [await client.find_task("sleeper").kiq(60) for _ in range(2)]
        # A kick delayed beyond request_ttl notes its ETA (the stream broker runs it at once).
        ttl = find_middleware(client).backend.request_ttl
        delayed = await client.find_task("quick").kicker().with_labels(delay=ttl + 60).kiq(1)
        for task in (running, *bulk):
            events.wait(task.task_id, "started")
        state.snapshot(rclient)  # the registry while the tasks run
        outcome = await running.abort(reason="contract test")
        assert outcome.status is AbortStatus.ABORTED and outcome.worker
        never_sent = f"never-sent-{uuid.uuid4().hex}"
        assert (await abort(client, never_sent)).status is AbortStatus.REVOKED
        outcomes = await abort_many(client, bulk, reason="contract test")
        assert {o.status for o in outcomes} == {AbortStatus.ABORTED}
        # An abort rule (abort_where), from a client that indexes a label: its keys.
        async with started(make_broker(redis_url, prefix, index_labels=("tenant",))) as by_label:
            await abort_where(by_label, {"tenant": "contract"}, reason="contract test")
        state.snapshot(rclient)  # the requests and the rule
        # No message about never_sent: nobody holds it (the start check would refuse it).
        until = {("abort", running.task_id), ("reply", running.task_id)}
        until |= {(kind, t.task_id) for t in bulk for kind in ("abort_many", "reply")}
        _drain(pubsub, state, until)
    finally:
        pubsub.close()
    state.task_ids = {running.task_id, never_sent, delayed.task_id, *(t.task_id for t in bulk)}
    state.task_names = {t.task_id: "sleeper" for t in (running, *bulk)}
    state.task_names[delayed.task_id] = "quick"
    state.worker_ids = {outcome.worker}
    return state


# --- the contract -------------------------------------------------------------------------------
def _clocks(rclient: redis.Redis) -> Clocks:
    seconds, micros = rclient.time()
    return Clocks(int(seconds) * 1000 + int(micros) // 1000, time.time())


async def test_keys_match_the_documented_table(
    live: Live, rclient: redis.Redis, client: AsyncBroker
) -> None:
    doc = DOC.read_text()
    rows = table(section(doc, "Keys"))
    worker_id = worker_id_pattern(doc)
    options = find_middleware(client).backend
    clocks = _clocks(rclient)
    assert all(worker_id.fullmatch(w) for w in live.worker_ids), live.worker_ids
    seen_rows: set[int] = set()
    for key, kind in sorted(live.keys.items()):
        matches = [
            (i, row, m)
            for i, row in enumerate(rows)
            if (m := pattern(ticks(row["key"])[0][0], live.prefix, RULE_ID).fullmatch(key))
        ]
        assert len(matches) == 1, f"{key}: matches {len(matches)} rows of the Keys table"
        i, row, match = matches[0]
        seen_rows.add(i)
        where = f"{key} ({row['key']})"
        for name, value in match.groupdict().items():  # variable parts name real things
            if name == "task_id":
                assert value in live.task_ids, where
            elif name == "worker_id":
                assert value in live.worker_ids, where
        assert kind == row["type"].strip("` ").lower(), f"{where}: a {kind}, not {row['type']}"
        _check_lifetime(where, live.ttls[key], row["lifetime"], options)
        content = row["content"]
        if kind == "hash":
            _check_hash(where, live.hashes[key], content, live, worker_id, clocks)
        elif kind == "zset":
            _check_zset(where, live.zsets[key], content, worker_id, clocks)
    unseen = [rows[i]["key"] for i in range(len(rows)) if i not in seen_rows]
    assert not unseen, f"documented keys that a running task and an abort did not use: {unseen}"


def _check_lifetime(where: str, pttl: int, lifetime: str, options: Any) -> None:
    first = ticks(lifetime)
    limit = getattr(options, first[0][0], None) if first else None
    times = re.match(r"\s*(\d+)\s*[\u00d7x]\s*`", lifetime)  # "3 x `lease`", sign or x
    if isinstance(limit, (int, float)):
        limit *= int(times.group(1)) if times else 1
        assert 0 < pttl <= limit * 1000, f"{where}: TTL {pttl} ms, documented {lifetime!r}"


def _check_hash(
    where: str,
    data: dict[str, str],
    content: str,
    live: Live,
    worker_id: re.Pattern[str],
    clocks: Clocks,
) -> None:
    per_entry = re.match(r"\s*field = ([^,]+), value = `([^`]+)`", content)
    if per_entry is None:  # named fields
        fields = dict(ticks(content))
        assert set(data) <= set(fields), f"{where}: undocumented fields {set(data) - set(fields)}"
        for name, description in fields.items():
            if name not in data:
                assert may_be_missing(description), f"{where}: field {name!r} is missing"
                continue
            check_value(f"{where} field {name}", data[name], description, clocks)
        return
    what, value_format = per_entry.group(1).strip(), per_entry.group(2)
    parts = re.findall(r"<([^<>]+)>", value_format)
    regex = r"\s".join(r"(.+)" if i == len(parts) - 1 else r"(\S+)" for i in range(len(parts)))
    assert data, f"{where}: empty while a task ran"
    for entry, value in data.items():
        if what == "task id":
            assert entry in live.task_ids, f"{where}: field {entry!r} is not a task id"
        match = re.fullmatch(regex, value)
        assert match, f"{where}: {value!r} is not `{value_format}`"
        for part, got in zip(parts, match.groups(), strict=True):
            said = re.search(rf"`<?{re.escape(part)}>?` is ([^,:;]*)", content)
            if said:
                check_value(f"{where} <{part}>", got, said.group(1), clocks)
            if part == "task name":
                assert got == live.task_names.get(entry), f"{where}: name {got!r}"


def _check_zset(
    where: str,
    members: list[tuple[str, float]],
    content: str,
    worker_id: re.Pattern[str],
    clocks: Clocks,
) -> None:
    match = re.match(r"\s*member = ([^,]+), score = (.*)", content)
    assert match, f"{where}: the content column does not say 'member = ..., score = ...'"
    member_is, score_is = match.group(1).strip(), match.group(2)
    assert members, f"{where}: empty while a worker ran"
    for member, score in members:
        if member_is == "worker id":
            assert worker_id.fullmatch(member), f"{where}: member {member!r}"
        assert score == int(score), f"{where}: score {score} of {member}"
        check_value(f"{where} score of {member}", str(int(score)), score_is, clocks)


async def test_messages_match_the_documented_channels_and_examples(live: Live) -> None:
    doc = DOC.read_text()
    text = section(doc, "Channels")
    examples = [
        json.loads(line)
        for block in re.findall(r"```json\n(.*?)```", text, re.S)
        for line in block.splitlines()
        if line.strip()
    ]
    # Every key any example of a type shows may appear; the keys every example shows must.
    by_type: dict[str, dict[str, object]] = {}
    required: dict[str, set[str]] = {}
    for example in examples:
        by_type[example["type"]] = {**example, **by_type.get(example["type"], {})}
        required[example["type"]] = required.get(example["type"], set(example)) & set(example)
    channels: list[tuple[re.Pattern[str], set[str]]] = []
    named: dict[str, str] = {}
    for row in table(text):
        template = ticks(row["channel"])[0][0]
        regex = pattern(template, live.prefix, named)
        name = re.sub(r"<[^<>]+>", "", template).rstrip(":").rsplit(":", 1)[-1]
        named[name] = re.sub(r"\(\?P<\w+>", "(?:", regex.pattern.removesuffix(r"\Z"))
        channels.append((regex, {t for t, _ in ticks(row["messages"])}))
    limit = int(re.sub(r"\D", "", re.search(r"at most ([\d\s]+) bytes", text).group(1)))  # type: ignore[union-attr]
    worker_id = worker_id_pattern(doc)

    assert live.messages
    for channel, raw in live.messages:
        message = json.loads(raw)
        kind = message.get("type")
        allowed = [types for regex, types in channels if regex.fullmatch(channel)]
        assert allowed, f"message on undocumented channel {channel}: {raw}"
        assert any(kind in types for types in allowed), f"{kind!r} is not sent on {channel}"
        assert len(raw.encode()) <= limit
        assert raw == json.dumps(message, separators=(",", ":"), ensure_ascii=False), (
            f"not compact JSON: {raw}"
        )
        example = by_type.get(kind)
        assert example is not None, f"no example of a {kind!r} message: {raw}"
        assert required[kind] <= set(message) <= set(example), f"{raw}: keys unlike {example}"
        for key, value in message.items():
            expected = example[key]
            if key == "v":
                assert value == expected, f"{key} in {raw}"  # the version is a constant
            elif value is None:
                assert re.search(rf"`{key}`: [^.]*`null`", text), f"{key} may not be null: {raw}"
            else:
                assert type(value) is type(expected), f"{key} in {raw}"
            values = _values_said(text, key)
            if values and value is not None:
                assert value in values, f"{key}={value!r} is not one of {values}"
        assert _task_ids(message) and set(_task_ids(message)) <= live.task_ids, raw
        for item in message.get("items", ()):  # [task_id, status, forced]
            assert len(item) == 3 and type(item[2]) is bool, raw
            assert item[1] in _values_said(text, "status"), raw
        if "worker" in message:
            assert worker_id.fullmatch(message["worker"]), raw
    reasons = {m["type"]: m["reason"] for m in map(json.loads, (r for _, r in live.messages))
               if m["type"] in ("abort", "abort_many")}  # fmt: skip
    assert reasons == {"abort": "contract test", "abort_many": "contract test"}, reasons


def test_documented_examples_parse() -> None:
    """Each example message of the document is one our parsers read (and not another)."""
    text = section(DOC.read_text(), "Channels")
    lines = [
        line
        for block in re.findall(r"```json\n(.*?)```", text, re.S)
        for line in block.splitlines()
        if line.strip()
    ]
    assert {json.loads(line)["type"] for line in lines} == {
        "abort", "abort_many", "reply", "replies"
    }  # fmt: skip
    for line in lines:
        ids = _task_ids(json.loads(line))
        if json.loads(line)["type"].startswith("abort"):
            assert [m.task_id for m in parse_aborts(line) or ()] == ids, line
            assert parse_replies(line) is None
        else:
            assert [r.task_id for r in parse_replies(line) or ()] == ids, line
            assert parse_aborts(line) is None


def _values_said(text: str, key: str) -> set[str]:
    """The values a bullet lists for ``key``: "`key`: `a` (...), `b` or `c`"."""
    values: set[str] = set()
    for bullet in re.split(r"\n(?=- |\n)", text):
        bullet = " ".join(bullet.split())  # a bullet wraps over several lines
        for segment in re.findall(rf"`{re.escape(key)}`:(.*?)(?=`\w+`:|$)", bullet):
            words = [t for t, _ in ticks(segment) if re.fullmatch(r"\w+", t) and t != "null"]
            if len(set(words)) >= 2:
                values |= set(words)
    return values


def test_the_document_parses() -> None:
    """The parser finds what the contract tests rely on (a doc edit that breaks the format
    fails here, with a message, rather than by a test silently checking nothing)."""
    doc = DOC.read_text()
    keys = table(section(doc, "Keys"))
    assert keys and all({"key", "type", "content", "lifetime"} <= set(row) for row in keys)
    assert all(ticks(row["key"]) for row in keys)
    channels = table(section(doc, "Channels"))
    assert channels and all(ticks(row["channel"]) and ticks(row["messages"]) for row in channels)
    assert worker_id_pattern(doc).fullmatch("vm-4711-a1b2c3")
    assert _values_said(section(doc, "Channels"), "status") >= {"aborted", "finished"}
    # the helpers on a made-up table
    sample = "## Keys\n\n| key | type | content | lifetime |\n|---|---|---|---|\n"
    sample += "| `P:x:<task_id>` | hash | `a` (ms, Redis clock), `b` (optional) | `lease` |\n"
    (row,) = table(section(sample, "Keys"))
    assert [t for t, _ in ticks(row["content"])] == ["a", "b"]
    assert pattern("P:x:<task_id>", "app").fullmatch("app:x:42").group("task_id") == "42"  # type: ignore[union-attr]
