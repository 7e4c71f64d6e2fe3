"""The failover invariant: aborts fired continuously while the master of the prefix's slot is
replaced, with default (fail-open) workers. Every ``abort()`` returns an outcome that stays
true, or raises ``AbortBackendError``, in bounded time: never ``revoked`` for a task whose body
then runs, never ``aborted`` for one that goes on to finish; and once the new master serves
(with no replica left after a SIGKILL), aborts are applied again.

Scenarios, each on a deployment of its own: Redis Cluster with the slot's master SIGKILLed;
Sentinel with ``SENTINEL FAILOVER`` and with the master SIGKILLed; and, on both, the master
SIGKILLed while its replica is stalled (SIGSTOP), so that what the master acknowledged since
exists nowhere else. Besides running tasks, each aborts tasks parked on a queue no worker
serves until the end, when a default worker drains it: a revoked one must never start.
``TASKIQ_ABORT_LONG=1`` fires for longer (more aborts before and after the failover).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from taskiq import AsyncBroker, AsyncTaskiqTask, Context, InMemoryBroker, TaskiqDepends
from taskiq.exceptions import TaskiqResultTimeoutError

from taskiq_abort import (
    AbortBackendError,
    AbortMiddleware,
    AbortStatus,
    TaskAbortedError,
    abort,
    find_middleware,
)
from taskiq_abort._wire.keys import KeySpace
from tests.app import make_broker, sync_redis
from tests.conftest import Events, WorkerProcess
from tests.faultkit import poll
from tests.support.redis_servers import ClusterServers, RedisServer, SentinelServers

pytestmark = pytest.mark.anyio

LONG = os.environ.get("TASKIQ_ABORT_LONG") == "1"
PHASE = 60 if LONG else 8  # applied aborts wanted before the failover, and again after it
STALLED = 30 if LONG else 6  # aborts answered while the replica is stalled
LOOPS = 3
# The causes of an abort that raised, as its message words them.
WHY = ("has not registered", "to its replicas in time", "is gone from", "cannot reach", "no master")
REPORT = Path(os.environ.get("TASKIQ_ABORT_FAILOVER_REPORT", "/tmp/taskiq-abort-failover.jsonl"))
started_at: dict[str, float] = {}


def pause(server: RedisServer) -> None:
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)


def resume(server: RedisServer) -> None:
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGCONT)


def _sleeper_app(
    url: str, prefix: str, lease: float = 10.0
) -> tuple[AsyncBroker, dict[str, asyncio.Event]]:
    """An in-process app whose ``sleeper`` sets ``started[task_id]``; durable (``replicas=1``).
    ``started_at[task_id]`` is the loop's time then."""
    broker = InMemoryBroker().with_middlewares(
        AbortMiddleware(url, prefix=prefix, replicas=1, redis_timeout=1, lease=lease)
    )
    started: dict[str, asyncio.Event] = {}

    @broker.task(task_name="sleeper")
    async def sleeper(context: Context = TaskiqDepends()) -> None:
        started_at[context.message.task_id] = asyncio.get_running_loop().time()
        started.setdefault(context.message.task_id, asyncio.Event()).set()
        await asyncio.sleep(60)

    return broker, started


async def test_a_master_without_replicas_takes_durable_writes(redis_url: str, prefix: str) -> None:
    """``replicas=1`` on a master that has none (a replica promoted after its master died, or
    a deployment without replicas): starts and revokes are durable at once, aborts work."""
    broker, started = _sleeper_app(redis_url, prefix)
    await broker.startup()
    try:
        task = await broker.find_task("sleeper").kiq()
        await asyncio.wait_for(started.setdefault(task.task_id, asyncio.Event()).wait(), 30)
        assert (await abort(broker, task.task_id)).status is AbortStatus.ABORTED
        assert (await abort(broker, "never-kicked")).status is AbortStatus.REVOKED
    finally:
        await broker.shutdown()


async def test_a_start_refused_on_the_master_stays_refused(prefix: str) -> None:
    """The replica stalls (SIGSTOP): still connected, it counts, and no write reaches it. A
    revoke is then not reported (its WAIT falls short), and a start of the task, which the
    start check refuses on the master, is not run by the (fail-open) worker either."""
    master = RedisServer().start()
    replica = RedisServer(extra=["--replicaof", "127.0.0.1", str(master.port)]).start()
    try:
        with master.client() as client:
            poll(lambda: client.info("replication")["connected_slaves"] == 1, 30, "a replica")
            client.set("synced", "1")
            assert client.wait(1, 10_000) == 1
        pause(replica)
        broker, started = _sleeper_app(master.url, prefix)
        await broker.startup()
        try:
            with pytest.raises(AbortBackendError, match="replica"):
                await abort(broker, "refused-at-start")
            kicker = broker.find_task("sleeper").kicker().with_task_id("refused-at-start")
            began = started.setdefault("refused-at-start", asyncio.Event())
            task = await kicker.kiq()
            ended = asyncio.ensure_future(broker.wait_all())
            began_waiter = asyncio.ensure_future(began.wait())
            await asyncio.wait([ended, began_waiter], timeout=30,
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            for waiter in (ended, began_waiter):
                waiter.cancel()
            assert not began.is_set(), "the worker ran a start its master had refused"
            result = await task.wait_result(timeout=30)
            assert isinstance(result.error, TaskAbortedError), result
        finally:
            await broker.shutdown()
    finally:
        resume(replica)
        replica.cleanup()
        master.cleanup()


async def test_a_start_no_replica_acknowledged_is_held_for_a_lease(prefix: str) -> None:
    """The replica stalls: a start check's "no request" cannot be made durable, and may come
    from a stale master (one a failover replaced, still serving this worker) whose successor
    holds a revoke. A fail-open worker holds such a start, checking it again, for one lease
    after the registry stopped replicating, as when no master answers; then it runs it."""
    master = RedisServer().start()
    replica = RedisServer(extra=["--replicaof", "127.0.0.1", str(master.port)]).start()
    try:
        with master.client() as client:
            poll(lambda: client.info("replication")["connected_slaves"] == 1, 30, "a replica")
            assert client.wait(1, 10_000) == 1
        broker, started = _sleeper_app(master.url, prefix, lease=2)
        await broker.startup()
        try:
            pause(replica)
            task = await broker.find_task("sleeper").kiq()
            began = started.setdefault(task.task_id, asyncio.Event())
            await asyncio.wait_for(began.wait(), 60)
            side = find_middleware(broker).worker
            assert side is not None and side._unreachable_since is not None
            assert started_at[task.task_id] - side._unreachable_since >= 2, "ran unchecked"
        finally:
            resume(replica)
            await broker.shutdown()
    finally:
        resume(replica)
        replica.cleanup()
        master.cleanup()


@dataclass
class Tally:
    """What each abort() said, by task id, and when."""

    said: dict[str, str] = field(default_factory=dict)
    when: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Wall-clock times (as the tasks' events carry) just before abort() and as it returned."""
    parked: set[str] = field(default_factory=set)
    why: Counter[str] = field(default_factory=Counter)
    """What the raised aborts said, by :data:`WHY`."""
    longest: float = 0.0
    kick_failed: int = 0
    results_lost: int = 0
    settled_at: float = float("inf")
    """Wall-clock time the new master served: aborts asked after it count as after settling."""

    def applied(self, after: float = 0.0) -> list[float]:
        """When each abort applied (``aborted``, ``revoked``) was asked, from ``after`` on."""
        return [
            self.when[tid][0]
            for tid, said in self.said.items()
            if said in ("aborted", "revoked") and self.when[tid][0] >= after
        ]

    def answered(self, after: float) -> int:
        return sum(1 for asked, _ in self.when.values() if asked >= after)


async def _abort(client: AsyncBroker, tally: Tally, target: str) -> None:
    started, asked = time.monotonic(), time.time()
    try:
        tally.said[target] = (await abort(client, target, timeout=3)).status.value
    except AbortBackendError as exc:
        tally.said[target] = "raised"
        tally.why[next((w for w in WHY if w in str(exc)), "other")] += 1
    tally.when[target] = (asked, time.time())
    tally.longest = max(tally.longest, time.monotonic() - started)


async def _kick(client: AsyncBroker, tally: Tally) -> str | None:
    try:
        return (await client.find_task("sleeper").kiq(60)).task_id
    except Exception:  # the broker's own Redis may be failing over too
        tally.kick_failed += 1
        await asyncio.sleep(0.05)  # back off while the broker's master is away
        return None


async def _fire(client: AsyncBroker, tally: Tally, stop: asyncio.Event) -> None:
    """Kick a long task, then abort either it (likely still queued: revoked) or the one kicked
    two rounds before (likely running: aborted), until told to stop."""
    kicked: list[str] = []
    i = 0
    while not stop.is_set():
        i += 1
        task_id = await _kick(client, tally)
        if task_id is None:
            continue
        kicked.append(task_id)
        target = kicked.pop() if i % 2 else kicked.pop(0) if len(kicked) > 2 else None
        if target is not None:
            await _abort(client, tally, target)


async def _park(parked: AsyncBroker, tally: Tally, stop: asyncio.Event) -> None:
    """Kick a task to the queue nobody serves yet and abort it: ``revoked``, or raised."""
    while not stop.is_set():
        task_id = await _kick(parked, tally)
        if task_id is not None:
            tally.parked.add(task_id)
            await _abort(parked, tally, task_id)


async def _until(predicate: Callable[[], bool], stop: asyncio.Event, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and not stop.is_set():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)  # the fire loops advance it; nothing to await on directly
    return True


@dataclass
class Failover:
    """How a scenario replaces the master: ``replace`` returns once a new master serves;
    ``stalled``: the master's replica, SIGSTOPped before and SIGCONTed right after the kill
    (so that it is promoted without what the master acknowledged meanwhile)."""

    scenario: str
    replace: Callable[[RedisServer | None], None]
    stalled: RedisServer | None = None


async def _run(url: str, prefix: str, redis_url: str, events: Events, how: Failover) -> None:
    env = {"TASKIQ_ABORT_TEST_EVENTS_URL": redis_url}
    worker = WorkerProcess(url, prefix, broker="list", env=env).start()
    parked_queue = f"{prefix}:parked"
    client = make_broker(url, prefix, "list")
    parked = make_broker(url, prefix, "list", queue=parked_queue)
    await client.startup()
    await parked.startup()
    tally, stop = Tally(), asyncio.Event()
    drainer: WorkerProcess | None = None
    try:
        loops = [asyncio.create_task(_fire(client, tally, stop)) for _ in range(LOOPS)]
        loops.append(asyncio.create_task(_park(parked, tally, stop)))
        assert await _until(lambda: len(tally.applied()) >= PHASE, stop, 120)
        if how.stalled is not None:
            pause(how.stalled)
            since = time.time()
            await _until(lambda: tally.answered(since) >= STALLED, stop, 120)
        await asyncio.to_thread(how.replace, how.stalled)
        tally.settled_at = time.time()
        settled = await _until(lambda: len(tally.applied(tally.settled_at)) >= PHASE, stop, 60)
        stop.set()
        await asyncio.gather(*loops)
        # The parked queue, drained by a default (fail-open) worker: a revoked task never starts.
        drainer = WorkerProcess(
            url, prefix, broker="list", env={**env, "TASKIQ_ABORT_TEST_QUEUE": parked_queue}
        ).start()
        await _drain(url, parked_queue, parked)
        await _drain(url, f"{prefix}:queue", client)
        lost = await _lost(tally, events, client)
        counts = Counter(tally.said.values())
        resumed = tally.applied(tally.settled_at)
        raised = [
            tally.when[t][0] - tally.settled_at for t, w in tally.said.items() if w == "raised"
        ]
        row = {
            "scenario": how.scenario,
            "aborts": len(tally.said),
            "applied": counts["aborted"] + counts["revoked"],
            "raised": counts["raised"],
            "lost": len(lost),
            "applied_after_settling": len(resumed),
            "first_applied_after_settling_s": round(min(resumed) - tally.settled_at, 1)
            if resumed
            else None,
            **{k: counts[k] for k in ("aborted", "revoked", "finished", "unconfirmed")},
            "parked": len(tally.parked),
            "kick_failed": tally.kick_failed,
            "results_lost": tally.results_lost,
            "longest_abort_s": round(tally.longest, 2),
            "raised_why": dict(tally.why),
            "last_raised_after_settling_s": round(max(raised, default=0.0), 1),
        }
        with REPORT.open("a") as out:
            out.write(json.dumps(row) + "\n")
        print(row)
        assert not lost, f"{how.scenario}: outcomes that did not stay true: {lost}"
        assert settled, f"{how.scenario}: aborts not applied once the new master served: {row}"
        assert tally.longest < 60, "an abort() took unbounded time"
    finally:
        stop.set()
        await client.shutdown()
        await parked.shutdown()
        worker.stop()
        if drainer is not None:
            drainer.stop()


async def _drain(url: str, queue: str, client: AsyncBroker) -> None:
    """Let a worker drain ``queue``, so that a revoke that did not hold would show by now: a
    probe sent last has its result only once the tasks popped before it have been admitted."""
    redis = sync_redis(url)
    try:
        poll(lambda: redis.llen(queue) == 0, 60, f"{queue} to drain")
    finally:
        redis.close()
    probe = await client.find_task("quick").kiq(1)
    assert (await probe.wait_result(timeout=30)).return_value == 2


async def _lost(tally: Tally, events: Events, client: AsyncBroker) -> list[tuple[str, str, Any]]:
    """Outcomes contradicted by what the task did: ``revoked`` but its body started after the
    request, or was still running when abort() returned (it ended in ``finally`` later: a body
    that started earlier on a worker process that then died never does); ``aborted`` but the
    task ran to its end (no ``finally`` and a normal result; a task cancelled at its very first
    ``await`` never reaches its ``finally``)."""
    lost: list[tuple[str, str, Any]] = []
    for task_id, said in tally.said.items():
        if said == "revoked":
            events.all(task_id)
            stamps = dict(events.seen.get(task_id, []))
            asked, answered = tally.when[task_id]
            if stamps.get("started", 0) > asked or stamps.get("finally", 0) > answered:
                lost.append((task_id, said, (asked, answered, stamps)))
        elif said == "finished":  # ended before the abort landed: it has its own result
            result = await AsyncTaskiqTask(task_id, client.result_backend).wait_result(timeout=30)
            if isinstance(result.error, TaskAbortedError):
                lost.append((task_id, said, result))
        elif said == "aborted" and "finally" not in events.all(task_id):
            try:
                result = await AsyncTaskiqTask(task_id, client.result_backend).wait_result(
                    timeout=10
                )
            except TaskiqResultTimeoutError:
                # The result was written to a master that then lost it (the result backend's
                # failover, not ours): then it must at least not be running anywhere.
                tally.results_lost += 1
                if task_id in await _running(client):
                    lost.append((task_id, said, "still running"))
                continue
            if not result.is_err:  # it ran to the end: "aborted" was not true
                lost.append((task_id, said, result))
    return lost


async def _running(client: AsyncBroker) -> set[str]:
    workers = await find_middleware(client).backend.workers()
    return {entry.task_id for worker in workers for entry in worker.tasks}


def _wait(check: Callable[[], bool], what: str) -> None:
    poll(lambda: _quietly(check), 60, what)


def _quietly(check: Callable[[], bool]) -> bool:
    try:
        return check()
    except Exception:  # a node going away answers with errors for a moment
        return False


@pytest.mark.parametrize(
    "stall",
    [False, pytest.param(True, marks=pytest.mark.heavy)],
    ids=["sigkill", "replica-stalled"],
)
async def test_cluster_master_sigkilled(
    prefix: str, redis_url: str, events: Events, stall: bool
) -> None:
    """The slot's master is SIGKILLed and not brought back: its replica serves alone."""
    cluster = ClusterServers().start()
    tag = KeySpace(prefix).tag
    try:
        owner = cluster.owner(tag)
        replica = cluster.replica_of(owner)

        def replace(stalled: RedisServer | None) -> None:
            owner.kill()
            if stalled is not None:
                resume(stalled)
            _wait(lambda: cluster.owner(tag) is replica, "the replica to take the slot over")

        stalled = ", its replica stalled" if stall else ""
        how = Failover(
            f"cluster: SIGKILL the slot's master{stalled}", replace, replica if stall else None
        )
        survivor = next(n for n in cluster.nodes if n not in (owner, replica))
        await _run(f"cluster://127.0.0.1:{survivor.port}", prefix, redis_url, events, how)
    finally:
        for node in cluster.nodes:  # never leave one stopped
            if node.proc is not None:
                resume(node)
        cluster.cleanup()


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("sentinel-failover", marks=pytest.mark.heavy),
        "sigkill",
        pytest.param("replica-stalled", marks=pytest.mark.heavy),
    ],
)
async def test_sentinel_failover(prefix: str, redis_url: str, events: Events, kind: str) -> None:
    """``SENTINEL FAILOVER`` (the old master comes back as a replica by itself), or the master
    SIGKILLed and not brought back (its replica serves alone)."""
    sentinel = SentinelServers().start()
    try:
        master, replica = sentinel.master, sentinel.replica

        def replace(stalled: RedisServer | None) -> None:
            if kind == "sentinel-failover":
                sentinel.failover()
                return
            master.kill()
            if stalled is not None:
                resume(stalled)
            _wait(lambda: sentinel.current_master() is replica, "the replica to be promoted")

        what = "SENTINEL FAILOVER" if kind == "sentinel-failover" else "SIGKILL the master"
        stalled = ", its replica stalled" if kind == "replica-stalled" else ""
        how = Failover(
            f"sentinel: {what}{stalled}", replace, replica if kind == "replica-stalled" else None
        )
        hosts = ",".join(f"{h}:{p}" for h, p in sentinel.addresses)
        await _run(f"sentinel://{hosts}/{sentinel.master_name}", prefix, redis_url, events, how)
    finally:
        if sentinel.replica.proc is not None:
            resume(sentinel.replica)
        sentinel.cleanup()
