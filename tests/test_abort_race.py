"""Aborts of one task racing each other: for a queued task every caller says ``revoked`` and
the task never runs; for a finished one every caller says ``finished``.

The tasks wait in a queue no worker serves yet. Each is aborted twice, once from the test and
once from another process (as a CLI or a dashboard would), with a random offset between the two
starts spread over the time one abort takes: both orders, the second call landing at every step
of the first. Lies are counted; then a worker started on the queue must run none of the bodies.
``TASKIQ_ABORT_RACE_SEED`` replays a run's offsets; ``TASKIQ_ABORT_LONG=1`` races more pairs.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import redis
from taskiq import AsyncBroker, TaskiqResult

from taskiq_abort import AbortBackendUnavailableError
from taskiq_abort.backends.base import AbortBackend
from taskiq_abort.outcome import RunningEntry
from tests.app import events_key, make_broker
from tests.conftest import ROOT, WorkerProcess
from tests.faultkit import poll, worker_log
from tests.race_peer import said
from tests.test_topologies import target

LONG = os.environ.get("TASKIQ_ABORT_LONG") == "1"
pytestmark = [pytest.mark.anyio, pytest.mark.timeout(600 if LONG else 120)]

PAIRS = 2000 if LONG else 300
SEED = int(os.environ.get("TASKIQ_ABORT_RACE_SEED", "0")) or random.randrange(1, 10**6)
LEAD = 0.003  # seconds the other process gets to read its order before its moment
_T = TypeVar("_T")


async def at(moment: float, call: Awaitable[_T]) -> tuple[_T, float]:
    """``call`` from ``moment`` on (``perf_counter``), and when it started. The loop keeps
    turning meanwhile, and the start lands within microseconds, which a sleep (the selector's
    millisecond ticks) would not give."""
    while time.perf_counter() < moment:
        await asyncio.sleep(0)
    started = time.perf_counter()
    return await call, started


@dataclass
class Race:
    prefix: str
    client: AsyncBroker
    peer: asyncio.subprocess.Process
    worker: Callable[[], WorkerProcess]

    async def peer_abort(self, how: str, task_id: str, moment: float) -> tuple[str, float]:
        """The other process's abort of ``task_id`` at ``moment``: its status, when it began."""
        assert self.peer.stdin is not None and self.peer.stdout is not None
        self.peer.stdin.write(f"{how} {task_id} {moment!r}\n".encode())
        status, started = (await self.peer.stdout.readline()).decode().split()
        return status, float(started)


@pytest.fixture(params=["standalone", "cluster"])
async def race(request: pytest.FixtureRequest, redis_url: str, prefix: str) -> AsyncIterator[Race]:
    """A list-queue app on ``param`` and an aborting process of its own; the app's workers
    log each task they skip as revoked."""
    url = redis_url if request.param == "standalone" else target(request, request.param)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    peer = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.race_peer", url, prefix,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT, env=env,
    )  # fmt: skip
    started: list[WorkerProcess] = []

    def worker() -> WorkerProcess:
        events = {"TASKIQ_ABORT_TEST_EVENTS_URL": redis_url}  # on the standalone Redis
        started.append(WorkerProcess(url, prefix, broker="list", env=events))
        return started[-1].start()

    client = make_broker(url, prefix, "list")
    await client.startup()
    try:
        assert peer.stdout is not None
        assert await asyncio.wait_for(peer.stdout.readline(), 60) == b"ready\n"
        yield Race(prefix, client, peer, worker)
    finally:
        for proc in started:
            proc.stop()
        await client.shutdown()
        if peer.returncode is None:
            peer.kill()
        await peer.wait()


def _dealt_with(
    ids: list[str], worker: WorkerProcess, prefix: str, rclient: redis.Redis
) -> dict[str, bool] | None:
    """Whether each task's body ran, once the worker skipped or ran every one of them."""
    skipped = set(re.findall(r"skipped revoked task (\S+)", worker_log(worker)))
    rest = [t for t in ids if t not in skipped]
    with rclient.pipeline(transaction=False) as pipe:
        for task_id in rest:
            pipe.exists(events_key(prefix, task_id))
        ran = dict(zip(rest, map(bool, pipe.execute()), strict=True))
    if not all(ran.values()):
        return None
    return {**dict.fromkeys(skipped & set(ids), False), **ran}


async def _pairs(race: Race, ids: list[str], mine: str, theirs: str, want: str) -> list[Any]:
    """Abort each of ``ids`` ``mine``-wise here and ``theirs``-wise in the peer (``by_id``,
    ``in_bulk``, or ``mixed``: either, at random); the pairs where either did not say ``want``
    (id, the peer's start - ours in ms, what we said, what the peer said)."""
    rng = random.Random(SEED)
    span = 0.001  # how long one abort takes here (learnt as it goes): the offsets cover it
    lies: list[Any] = []
    for task_id in ids:
        here, there = (
            rng.choice(["by_id", "in_bulk"]) if h == "mixed" else h for h in (mine, theirs)
        )
        offset = rng.uniform(-span, span)  # > 0: the peer starts later
        now = time.perf_counter() + LEAD
        ((status, took), began), (peer_status, peer_began) = await asyncio.gather(
            at(now + max(-offset, 0.0), said(here, race.client, task_id)),
            race.peer_abort(there, task_id, now + max(offset, 0.0)),
        )
        if (status, peer_status) != (want, want):
            lies.append((task_id, round((peer_began - began) * 1000, 3), status, peer_status))
        span = 0.9 * span + 0.1 * took
    return lies


async def _race_queued(race: Race, mine: str, theirs: str, rclient: redis.Redis) -> None:
    """``PAIRS`` queued tasks, each aborted twice at once; then a worker comes."""
    quick = race.client.find_task("quick")
    ids = [(await quick.kiq(n)).task_id for n in range(PAIRS)]
    lies = await _pairs(race, ids, mine, theirs, "revoked")
    worker = race.worker()
    bodies = poll(lambda: _dealt_with(ids, worker, race.prefix, rclient), 60, "the worker")
    ran = [task_id for task_id, body_ran in bodies.items() if body_ran]
    print(f"seed {SEED}: {len(lies)} of {PAIRS} pairs lied, {len(ran)} revoked bodies ran")
    assert not lies and not ran, (
        f"seed {SEED}: {len(lies)} of {PAIRS} pairs lied (id, peer's start - ours in ms, ours, "
        f"theirs): {lies[:5]}; {len(ran)} revoked bodies ran: {ran[:5]}"
    )


async def test_two_aborts_of_a_queued_task(race: Race, rclient: redis.Redis) -> None:
    await _race_queued(race, "by_id", "by_id", rclient)


async def test_abort_by_id_racing_abort_many(race: Race, rclient: redis.Redis) -> None:
    await _race_queued(race, "mixed", "mixed", rclient)


async def test_two_aborts_of_a_finished_task(race: Race) -> None:
    """Both say ``finished``: neither takes the other's dropping of the moot request for a
    request lost in a failover."""
    ids = [uuid.uuid4().hex for _ in range(PAIRS // 3)]
    for task_id in ids:  # its own result, as a worker stores it
        done = TaskiqResult(is_err=False, return_value=1, execution_time=0.1, labels={})
        await race.client.result_backend.set_result(task_id, done)
    lies = await _pairs(race, ids, "mixed", "mixed", "finished")
    print(f"seed {SEED}: {len(lies)} of {len(ids)} pairs lied")
    assert not lies, f"seed {SEED}: {len(lies)} of {len(ids)} pairs lied: {lies[:5]}"


async def test_a_claimed_revoke_settles_as_revoked(backend: AbortBackend) -> None:
    """The rule both backends follow: a result found after an aborter claimed the revoke is
    that aborter's (revoked); one found without a claim is the task's own (the request is
    moot: dropped, or on Redis kept a while as ``finished``)."""
    for task_id, claimed in (("claimed", True), ("finished", False)):
        await backend.request(task_id, "why", "test")
        if claimed:
            await backend.mark_revoking(task_id)
        settled = await backend.settle_finished(task_id)
        record = await backend.get_request(task_id)
        if claimed:
            assert settled is not None and record is not None
            assert (settled.outcome, record.outcome, record.worker) == ("revoked", "revoked", None)
        else:
            assert settled is None and (record is None or record.outcome == "finished")
    with pytest.raises(AbortBackendUnavailableError, match=r"task never-requested .*again"):
        await backend.mark_revoking("never-requested")  # nothing to claim: nothing is revoked


async def test_a_request_settled_finished_stops_no_later_attempt(backend: AbortBackend) -> None:
    """The abort said ``finished`` (the task had its own result): the request it leaves behind
    for late aborters must not refuse the next attempt with that id (a retry that keeps each
    attempt's result, a task kicked again with the same id)."""
    await backend.register("w1", {}, [])
    await backend.request("rekicked", "why", "test")
    assert await backend.settle_finished("rekicked") is None  # the task's own result was there
    entry = RunningEntry("rekicked", "job", "r1", time.time(), "w1")
    _, aborted = await backend.sync("w1", [entry], [])
    assert aborted == []
    await backend.unregister("w1")
