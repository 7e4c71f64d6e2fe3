"""Bulk aborts (issue 8, "Bulk"): ``abort_many`` with real worker processes and Redis, on the
in-process backend, on a Redis Cluster; the worker's confirmation batching.

One message per holding worker (not per task), and confirmations batched; every outcome as
``abort()`` would give it, position by position.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pytest
import redis
from taskiq import AsyncBroker, InMemoryBroker

from taskiq_abort import (
    AbortMiddleware,
    AbortStatus,
    InvalidTaskIdError,
    MemoryAbortBackend,
    TaskAbortedError,
    abort_many,
    find_middleware,
)
from taskiq_abort._wire.keys import KeySpace
from taskiq_abort._wire.protocol import parse_aborts, parse_replies
from taskiq_abort._worker.side import WorkerSide
from taskiq_abort.backends.base import Confirmation
from tests.conftest import Events, WorkerProcess
from tests.faultkit import apoll, client_broker, held
from tests.support.redis_servers import ClusterServers

pytestmark = pytest.mark.anyio


class Wire:
    """Every message on the prefix's worker and reply channels, read in a thread of its own."""

    def __init__(self, rclient: redis.Redis, prefix: str) -> None:
        self.pubsub = rclient.pubsub()
        self.pubsub.psubscribe(f"{KeySpace(prefix).channel_prefix}*")
        while (m := self.pubsub.get_message(timeout=1.0)) is None or m["type"] != "psubscribe":
            pass
        self.messages: list[tuple[str, str]] = []

    def until(self, done: Any, timeout: float = 30.0) -> list[tuple[str, str]]:
        """Read until ``done(messages)`` holds (or fail after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while not done(self.messages):
            assert time.monotonic() < deadline, self.messages[-5:]
            message = self.pubsub.get_message(timeout=0.5)
            if message is not None and message["type"] == "pmessage":
                self.messages.append((message["channel"], message["data"]))
        return self.messages

    def close(self) -> None:
        self.pubsub.close()


def _confirmed(messages: list[tuple[str, str]]) -> set[str]:
    ids: set[str] = set()
    for _, raw in messages:
        ids |= {reply.task_id for reply in parse_replies(raw) or ()}
    return ids


@pytest.fixture
def two_queues(worker_factory: type[WorkerProcess], prefix: str) -> tuple[str, str]:
    """Two worker processes, each on a queue of its own: tasks land on the one chosen."""
    queues = (f"{prefix}:queue", f"{prefix}:queue-b")
    for queue in queues:
        worker_factory(env={"TASKIQ_ABORT_TEST_QUEUE": queue}).start(wait=False)
    return queues


async def test_bulk_abort_on_two_workers(
    redis_url: str,
    prefix: str,
    client: AsyncBroker,
    two_queues: tuple[str, str],
    worker_factory: type[WorkerProcess],
    events: Events,
    rclient: redis.Redis,
) -> None:
    """Running tasks on two workers, queued ones, a finished one, one nobody sent, duplicates:
    each position gets what ``abort()`` would say; each worker gets one message for all its
    tasks; queued ones never run."""
    async with (
        client_broker(redis_url, prefix, queue=two_queues[1]) as client_b,
        client_broker(redis_url, prefix, queue=f"{prefix}:queue-c") as client_c,
    ):
        finished = await client.find_task("quick").kiq(1)
        assert (await finished.wait_result(timeout=30)).return_value == 2
        running = [await client.find_task("sleeper").kiq(60) for _ in range(25)]
        running += [await client_b.find_task("sleeper").kiq(60) for _ in range(25)]
        queued = [await client_c.find_task("sleeper").kiq(60) for _ in range(10)]  # no worker
        for task in running:
            events.wait(task.task_id, "started")
        holders = {
            tid: info.worker_id
            for info in await find_middleware(client).backend.workers()
            for tid in (entry.task_id for entry in info.tasks)
        }
        assert len(set(holders.values())) == 2  # one queue each: both workers hold 25

        wire = Wire(rclient, prefix)
        never_sent = f"never-sent-{uuid.uuid4().hex}"
        items = [*running, *queued, finished.task_id, never_sent, running[0], queued[0]]
        outcomes = await abort_many(client, items, reason="bulk", timeout=30)

        assert [o.task_id for o in outcomes] == [
            t if isinstance(t, str) else t.task_id for t in items
        ]
        by_id = {o.task_id: o for o in outcomes}
        for task in running:
            outcome = by_id[task.task_id]
            assert (outcome.status, outcome.reason) == (AbortStatus.ABORTED, "bulk"), outcome
            assert outcome.worker == holders[task.task_id]
        assert {by_id[t.task_id].status for t in queued} == {AbortStatus.REVOKED}
        assert by_id[finished.task_id].status is AbortStatus.FINISHED
        assert by_id[never_sent].status is AbortStatus.REVOKED
        assert outcomes[-2] == outcomes[0] and outcomes[-1] == by_id[queued[0].task_id]

        # The wire: one abort_many message per worker, listing every task it held.
        messages = wire.until(lambda got: _confirmed(got) >= {t.task_id for t in running})
        wire.close()
        sent = [
            (channel, [m.task_id for m in parse_aborts(raw) or ()])
            for channel, raw in messages
            if json.loads(raw)["type"] in ("abort", "abort_many")
        ]
        assert len(sent) == 2, sent
        print(f"{len(messages) - 2} reply message(s) for {len(running)} tasks")
        for channel, ids in sent:
            worker = channel.removeprefix(KeySpace(prefix).worker_channel_prefix)
            assert sorted(ids) == sorted(t for t, w in holders.items() if w == worker)

        for task in running + queued:
            result = await task.wait_result(timeout=30)
            assert isinstance(result.error, TaskAbortedError) and result.error.reason == "bulk"
        for task in running:
            assert events.all(task.task_id)[-1] == "finally"
        # The queued ones never run: a worker on their queue skips them (FIFO: then `after`).
        worker_factory(env={"TASKIQ_ABORT_TEST_QUEUE": f"{prefix}:queue-c"}).start()
        after = await client_c.find_task("quick").kiq(5)
        assert (await after.wait_result(timeout=30)).return_value == 10
        assert all("started" not in events.all(t.task_id) for t in queued)
        aborted = {t.task_id for t in running}
        await apoll(lambda: _none_held(client, aborted), 30, "the registry to drop them")


async def _none_held(client: AsyncBroker, task_ids: set[str]) -> bool:
    return not set(await held(client)) & task_ids


async def test_invalid_id_sends_nothing_and_wait_false(
    client: AsyncBroker, worker_factory: type[WorkerProcess], events: Events
) -> None:
    worker_factory().start()
    tasks = [await client.find_task("sleeper").kiq(60) for _ in range(3)]
    for task in tasks:
        events.wait(task.task_id, "started")
    backend = find_middleware(client).backend
    with pytest.raises(InvalidTaskIdError, match="it is empty"):
        await abort_many(client, [tasks[0], ""])
    assert await backend.get_request(tasks[0].task_id) is None  # nothing was recorded
    assert await abort_many(client, []) == []

    outcomes = await abort_many(client, tasks, wait=False)
    assert {o.status for o in outcomes} == {AbortStatus.UNCONFIRMED}
    assert all(o.worker for o in outcomes)
    for task in tasks:  # the aborts still happen
        assert isinstance((await task.wait_result(timeout=30)).error, TaskAbortedError)


async def test_bulk_abort_in_process() -> None:
    broker = InMemoryBroker().with_middlewares(AbortMiddleware())
    started: dict[int, asyncio.Event] = {}

    @broker.task
    async def hold(n: int) -> int:
        started[n].set()
        await asyncio.sleep(3600)
        return n

    await broker.startup()
    try:
        tasks = []
        for n in range(20):
            started[n] = asyncio.Event()
            tasks.append(await hold.kiq(n))
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started.values())), 10)
        items = [*tasks, "nobody-holds-it", tasks[0].task_id]
        outcomes = await abort_many(broker, items, reason="mem")
        assert [o.status for o in outcomes[:20]] == [AbortStatus.ABORTED] * 20
        assert outcomes[20].status is AbortStatus.REVOKED and outcomes[21] == outcomes[0]
        result = await tasks[7].wait_result(timeout=5)
        assert isinstance(result.error, TaskAbortedError) and result.error.reason == "mem"
        again = await abort_many(broker, tasks[:2])  # aborting twice says the same again
        assert [o.status for o in again] == [AbortStatus.ABORTED] * 2
    finally:
        await broker.shutdown()


class _HeldBackend(MemoryAbortBackend):
    """Its confirmation calls wait until the test lets them through."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[str]] = []
        self.gate = asyncio.Event()

    async def confirm_many(self, worker_id: str, confirmations: Any) -> None:
        self.calls.append([c.task_id for c in confirmations])
        await self.gate.wait()
        await super().confirm_many(worker_id, confirmations)


async def test_confirmations_batch_while_one_is_in_flight() -> None:
    """The first confirmation goes at once, alone; those that come while it is in flight go
    together in the next call; a lone one after that goes at once again."""
    backend = _HeldBackend()
    side = WorkerSide(backend)
    first = asyncio.create_task(side.confirm("t0", "aborted", ["r"]))
    await asyncio.sleep(0)  # let it start its call (an event-loop turn, not a timing)
    assert backend.calls == [["t0"]]
    rest = [asyncio.create_task(side.confirm(f"t{i}", "aborted", ["r"])) for i in range(1, 6)]
    await asyncio.sleep(0)
    assert backend.calls == [["t0"]]  # they wait for the call in flight
    backend.gate.set()
    await asyncio.wait_for(asyncio.gather(first, *rest), 5)
    assert backend.calls == [["t0"], ["t1", "t2", "t3", "t4", "t5"]]
    await asyncio.wait_for(side.confirm("t6", "finished", ["r"]), 5)
    assert backend.calls[-1] == ["t6"]
    assert not side._confirmations.tasks and not side._confirmations._busy


async def test_cluster_bulk_scripts_are_single_slot(
    redis_cluster: ClusterServers, prefix: str
) -> None:
    """REQUEST_MANY and CONFIRM_MANY on a Redis Cluster: one slot, sharded publishing."""
    middleware = AbortMiddleware(redis_cluster.url, cluster=True, prefix=prefix)
    broker = InMemoryBroker().with_middlewares(middleware)
    started: dict[int, asyncio.Event] = {}

    @broker.task(task_name="cluster_hold")
    async def hold(n: int) -> None:
        started[n].set()
        await asyncio.sleep(60)

    await broker.startup()
    try:
        tasks = []
        for n in range(12):
            started[n] = asyncio.Event()
            tasks.append(await hold.kiq(n))
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started.values())), 30)
        outcomes = await abort_many(broker, [*tasks, "queued-on-cluster"], timeout=30)
        assert [o.status for o in outcomes] == [AbortStatus.ABORTED] * 12 + [AbortStatus.REVOKED]
        # CONFIRM_MANY itself (the worker uses it when confirmations pile up): records both.
        backend = middleware.backend
        ids = [f"c-{uuid.uuid4().hex}" for _ in range(2)]
        await backend.request_many(ids, "direct", "test:1")
        reply_to = (backend.reply_channel,)  # type: ignore[attr-defined]
        await backend.confirm_many(
            "w-1",
            [Confirmation(ids[0], "aborted", reply_to), Confirmation(ids[1], "finished", ())],
        )
        records = await backend.get_requests(ids)
        assert [records[t].outcome for t in ids] == ["aborted", "finished"]
    finally:
        await broker.shutdown()


async def test_request_many_splits_at_8_kb_and_keeps_first_reasons(
    redis_url: str, prefix: str, rclient: redis.Redis
) -> None:
    """REQUEST_MANY on a worker holding 1,500 tasks with awkward ids (quotes, backslashes,
    slashes, emoji, 256 characters): every message within 8,192 bytes, each id in exactly
    one, two script calls (1,000 ids each at most); an id requested before keeps its first
    reason, in a message of its own."""
    from taskiq_abort._wire.protocol import MAX_MESSAGE_BYTES
    from taskiq_abort.backends.redis import RedisAbortBackend
    from taskiq_abort.outcome import RunningEntry

    backend = RedisAbortBackend(redis_url, prefix=prefix)
    worker = f"fake-{uuid.uuid4().hex[:6]}"
    shapes = ['q"uote-{}', "back\\slash-{}", "sl/ash-{}", "emoji-\U0001f680-{}", "{}-" + "x" * 240]
    ids = [shapes[i % len(shapes)].format(i)[:256] for i in range(1500)]
    entries = [RunningEntry(tid, "held", f"r{i}", 0.0) for i, tid in enumerate(ids)]
    pubsub = rclient.pubsub()
    pubsub.subscribe(KeySpace(prefix).worker_channel(worker))
    try:
        while (m := pubsub.get_message(timeout=1.0)) is None or m["type"] != "subscribe":
            pass
        await backend.register(worker, {"host": "h", "pid": "1", "started": "0"}, entries)
        await backend.request(ids[7], "the first reason", "test:1")
        pubsub.get_message(timeout=5.0)  # REQUEST's own `abort` message
        long_reason = "\U0001f680" * 1024  # 4,096 bytes
        clients = backend._c
        script, calls = clients.request_many, []

        def counted(keys: list[str], args: list[Any]) -> Any:
            calls.append(args)
            return script(keys, args)

        clients.request_many = counted
        results = await backend.request_many(ids, long_reason, "test:2")
        assert len(calls) == 2  # 1,000 + 500
        assert [r.holders for r in results] == [(worker,)] * len(ids)
        assert all(r.receivers == 1 for r in results)
        assert results[7].reason == "the first reason"
        assert {r.reason for i, r in enumerate(results) if i != 7} == {long_reason}
        seen: list[str] = []
        reasons: dict[str, str | None] = {}
        while len(seen) < len(ids):
            message = pubsub.get_message(timeout=5.0)
            assert message is not None, f"{len(seen)} of {len(ids)} ids arrived"
            if message["type"] != "message":
                continue
            assert len(message["data"].encode()) <= MAX_MESSAGE_BYTES
            parsed = parse_aborts(message["data"])
            assert parsed is not None, message["data"][:200]
            seen += [m.task_id for m in parsed]
            reasons.update({m.task_id: m.reason for m in parsed})
        assert sorted(seen) == sorted(ids)
        assert reasons[ids[7]] == "the first reason" and reasons[ids[8]] == long_reason
        records = await backend.get_requests(ids)
        assert {records[t].requested_by for t in ids} == {"test:2"} | {"test:1"}
        assert await backend.get_request(ids[7]) == records[ids[7]]
        assert records[ids[7]].requested_by == "test:1"
    finally:
        pubsub.close()
        await backend.unregister(worker)
        await backend.close()


async def test_an_aborted_task_leaves_no_reference_cycle() -> None:
    """taskiq's run_task keeps the exception's traceback in a local (a cycle through its frame):
    once the result is stored, an aborted task's frames are released at once, not left to the
    cyclic GC, which with thousands of tasks running is expensive (benchmarks/README.md, 5)."""
    import gc

    from taskiq.result_backends.dummy import DummyResultBackend

    # A result backend that keeps nothing, like one that serializes to Redis: the exception
    # and its traceback are unreachable once the task's callback ends.
    broker = InMemoryBroker().with_result_backend(DummyResultBackend())
    broker.add_middlewares(AbortMiddleware())
    started = asyncio.Event()

    @broker.task
    async def hold() -> None:
        started.set()
        await asyncio.sleep(3600)

    await broker.startup()
    gc.collect()
    gc.disable()
    try:
        task = await hold.kiq()
        await asyncio.wait_for(started.wait(), 10)
        assert (await task.abort()).status is AbortStatus.ABORTED
        await asyncio.wait_for(asyncio.gather(*broker._running_tasks), 5)  # the callback ended
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        frames = [o.f_code.co_name for o in gc.garbage if type(o).__name__ == "frame"]
        assert not {"run_task", "_run_edge", "async_wrapper"} & set(frames), frames
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
        await broker.shutdown()


async def test_bodies_stop_at_once_reports_take_turns() -> None:
    """A bulk abort stops every body at once; their reports (result write, ack, confirmation)
    go a bounded number at a time (the worker's turns; 2 here, 32 by default)."""
    from taskiq.brokers.inmemory_broker import InmemoryResultBackend

    class HeldResults(InmemoryResultBackend[Any]):
        def __init__(self) -> None:
            super().__init__()
            self.writing = self.peak = 0
            self.two_writing, self.go = asyncio.Event(), asyncio.Event()

        async def set_result(self, task_id: str, result: Any) -> None:
            self.writing += 1
            self.peak = max(self.peak, self.writing)
            if self.writing >= 2:
                self.two_writing.set()
            await self.go.wait()
            self.writing -= 1
            await super().set_result(task_id, result)

    results = HeldResults()
    broker = InMemoryBroker().with_result_backend(results)
    middleware = AbortMiddleware()
    broker.add_middlewares(middleware)
    started: dict[int, asyncio.Event] = {}
    stopped: set[int] = set()
    all_stopped = asyncio.Event()

    @broker.task
    async def hold(n: int) -> None:
        started[n].set()
        try:
            await asyncio.sleep(3600)
        finally:
            stopped.add(n)
            if len(stopped) == 20:
                all_stopped.set()

    await broker.startup()
    try:
        assert middleware.worker is not None
        middleware.worker._reports = asyncio.Semaphore(2)
        tasks = []
        for n in range(20):
            started[n] = asyncio.Event()
            tasks.append(await hold.kiq(n))
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started.values())), 10)
        aborting = asyncio.create_task(abort_many(broker, tasks, timeout=30))
        await asyncio.wait_for(all_stopped.wait(), 10)  # every body stopped...
        await asyncio.wait_for(results.two_writing.wait(), 10)
        assert results.writing == 2  # ...while two report and the others wait their turn
        results.go.set()
        outcomes = await asyncio.wait_for(aborting, 30)
        assert [o.status for o in outcomes] == [AbortStatus.ABORTED] * 20
        assert results.peak == 2
    finally:
        results.go.set()
        await broker.shutdown()


async def test_lost_replies_are_read_from_the_records_and_deadlines_hold() -> None:
    """A reply lost on the way (a reconnect) is found in the durable records once replies stop
    coming; an id that never answers is given up at its batch's deadline, after a last look."""
    from taskiq_abort._aborter.algorithm import _hear_all, _Tally
    from taskiq_abort._wire.protocol import ReplyMessage

    class Records(MemoryAbortBackend):
        def __init__(self) -> None:
            super().__init__()
            self.looked: list[list[str]] = []

        async def recheck(self, task_ids: Any) -> list[ReplyMessage]:
            self.looked.append(sorted(task_ids))
            return [ReplyMessage(t, "aborted", "") for t in task_ids if t == "lost"]

    backend = Records()
    ids = ["heard", "lost", "silent"]
    waiter = await backend.prepare_replies(ids)
    backend._deliver_reply(ReplyMessage("heard", "finished", "w1"))
    now = time.perf_counter()
    deadlines = [(now, ["silent"]), (now + 30, ["heard", "lost"])]
    tallies = {t: _Tally(("w1",)) for t in ids}
    verdicts = await asyncio.wait_for(_hear_all(backend, waiter, tallies, deadlines), 10)
    assert verdicts == {
        "heard": ("finished", "w1", False),
        "silent": None,
        "lost": ("aborted", "w1", False),
    }
    assert backend.looked[0] == ["silent"]  # the last look at the first batch's deadline
    assert ["lost"] in backend.looked[1:]  # then, once nothing came for a second


async def test_request_many_records_each_request_as_request_does(
    redis_url: str, prefix: str, rclient: redis.Redis
) -> None:
    """The shortest grace stands per id (and is what its message says), and a request lives as
    long as its delayed task's ETA marker requires, as with REQUEST."""
    from taskiq_abort.backends.redis import RedisAbortBackend
    from taskiq_abort.outcome import RunningEntry

    backend = RedisAbortBackend(redis_url, prefix=prefix, request_ttl=100)
    keys = KeySpace(prefix)
    worker = f"fake-{uuid.uuid4().hex[:6]}"
    sooner, plain, delayed = (f"{kind}-{uuid.uuid4().hex}" for kind in ("sooner", "plain", "eta"))
    entries = [RunningEntry(t, "held", f"r{i}", 0.0) for i, t in enumerate((sooner, plain))]
    pubsub = rclient.pubsub()
    pubsub.subscribe(keys.worker_channel(worker))
    try:
        while (m := pubsub.get_message(timeout=1.0)) is None or m["type"] != "subscribe":
            pass
        await backend.register(worker, {"host": "h", "pid": "1", "started": "0"}, entries)
        await backend.note_eta(delayed, 1000)  # due in 1,000 s, beyond request_ttl
        await backend.request(sooner, None, "test:1", grace=30)
        pubsub.get_message(timeout=5.0)  # REQUEST's own `abort` message
        await backend.request_many([sooner, plain, delayed], None, "test:2", grace=60)
        graces: dict[str, float] = {}
        while len(graces) < 2:
            message = pubsub.get_message(timeout=5.0)
            assert message is not None, graces
            if message["type"] == "message":
                graces.update({m.task_id: m.grace for m in parse_aborts(message["data"]) or ()})
        assert graces == {sooner: 30.0, plain: 60.0}
        assert rclient.hget(keys.request(sooner), "grace") == "30000"
        assert rclient.hget(keys.request(plain), "grace") == "60000"
        assert 100_000 < rclient.pttl(keys.request(plain)) <= 160_000  # ttl + grace
        assert rclient.pttl(keys.request(delayed)) > 1_000_000  # until its ETA + ttl
    finally:
        pubsub.close()
        await backend.unregister(worker)
        await backend.close()
