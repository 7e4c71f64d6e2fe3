"""The failover invariant (issue 8): aborts fired continuously while the master of the prefix's
slot is replaced. Every ``abort()`` returns an outcome that stays true, or raises
``AbortBackendError``, in bounded time; never ``revoked`` for a task that then runs its body,
never ``aborted`` for one that goes on to finish.

Scenarios: Redis Cluster with the slot's master SIGKILLed; Sentinel with ``SENTINEL FAILOVER``
and with the master SIGKILLed. Each runs on a deployment of its own. Workers run with
``fail_closed=True``: a task that starts while no master is reachable is refused, not run
unregistered (the fail-open window of docs/guarantees.md is a separate, documented promise).
``TASKIQ_ABORT_LONG=1`` fires for longer (more aborts before and after the failover).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from taskiq import AsyncBroker, AsyncTaskiqTask
from taskiq.exceptions import TaskiqResultTimeoutError

from taskiq_abort import AbortBackendError, TaskAbortedError, find_middleware
from taskiq_abort.keys import KeySpace
from taskiq_abort.testing import ClusterServers, SentinelServers
from tests.app import make_broker, sync_redis
from tests.conftest import Events, WorkerProcess
from tests.faultkit import poll

pytestmark = pytest.mark.anyio

LONG = os.environ.get("TASKIQ_ABORT_LONG") == "1"
PHASE = 60 if LONG else 12  # applied aborts wanted before the failover, and again after it
LOOPS = 3
REPORT = Path(os.environ.get("TASKIQ_ABORT_FAILOVER_REPORT", "/tmp/taskiq-abort-failover.jsonl"))


@dataclass
class Tally:
    """What each abort() said, by task id, and how long it took."""

    said: dict[str, str] = field(default_factory=dict)
    when: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Wall-clock times (as the tasks' events carry) just before abort() and as it returned."""
    longest: float = 0.0
    kick_failed: int = 0
    results_lost: int = 0
    applied: int = 0

    def count(self) -> Counter[str]:
        return Counter(self.said.values())


async def _fire(client: AsyncBroker, tally: Tally, stop: asyncio.Event) -> None:
    """Kick a long task, then abort either it (likely still queued: revoked) or the one kicked
    two rounds before (likely running: aborted), until told to stop."""
    kicked: list[str] = []
    i = 0
    while not stop.is_set():
        i += 1
        try:
            task = await client.find_task("sleeper").kiq(60)
            kicked.append(task.task_id)
        except Exception:  # the broker's own Redis may be failing over too
            tally.kick_failed += 1
            await asyncio.sleep(0.05)  # back off while the broker's master is away
            continue
        target = kicked.pop() if i % 2 else kicked.pop(0) if len(kicked) > 2 else None
        if target is None:
            continue
        started, asked = time.monotonic(), time.time()
        try:
            outcome = await client_abort(client, target)
            tally.said[target] = outcome
            tally.when[target] = (asked, time.time())
            if outcome in ("aborted", "revoked"):
                tally.applied += 1
        except AbortBackendError:
            tally.said[target] = "raised"
        tally.longest = max(tally.longest, time.monotonic() - started)


async def client_abort(client: AsyncBroker, task_id: str) -> str:
    from taskiq_abort import abort

    return (await abort(client, task_id, timeout=3)).status.value


async def _until(predicate: Callable[[], bool], stop: asyncio.Event) -> None:
    while not predicate() and not stop.is_set():
        await asyncio.sleep(0.05)  # the fire loops advance it; nothing to await on directly


async def _run(
    url: str,
    prefix: str,
    redis_url: str,
    events: Events,
    failover: Callable[[], None],
    scenario: str,
) -> None:
    env = {"TASKIQ_ABORT_TEST_EVENTS_URL": redis_url, "TASKIQ_ABORT_TEST_FAIL_CLOSED": "1"}
    worker = WorkerProcess(url, prefix, broker="list", env=env).start()
    client = make_broker(url, prefix, "list")
    await client.startup()
    tally, stop = Tally(), asyncio.Event()
    try:
        loops = [asyncio.create_task(_fire(client, tally, stop)) for _ in range(LOOPS)]
        await asyncio.wait_for(_until(lambda: tally.applied >= PHASE, stop), 120)
        before = tally.applied
        gap = time.monotonic()
        await asyncio.to_thread(failover)  # returns once healed: a new master and a replica
        gap = time.monotonic() - gap
        await asyncio.wait_for(_until(lambda: tally.applied >= before + PHASE, stop), 120)
        stop.set()
        await asyncio.gather(*loops)
        await _drain(url, prefix, client)
        counts = tally.count()
        lost = await _lost(tally, events, client)
        row = {
            "scenario": scenario,
            "applied": counts["aborted"] + counts["revoked"],
            "aborted": counts["aborted"],
            "revoked": counts["revoked"],
            "finished": counts["finished"],
            "unconfirmed": counts["unconfirmed"],
            "raised": counts["raised"],
            "lost": len(lost),
            "kick_failed": tally.kick_failed,
            "results_lost": tally.results_lost,
            "longest_abort_s": round(tally.longest, 2),
            "failover_and_heal_s": round(gap, 1),
        }
        with REPORT.open("a") as out:
            out.write(json.dumps(row) + "\n")
        print(row)
        assert not lost, f"{scenario}: outcomes that did not stay true: {lost}"
        assert tally.longest < 60, "an abort() took unbounded time"
    finally:
        stop.set()
        await client.shutdown()
        worker.stop()


async def _drain(url: str, prefix: str, client: AsyncBroker) -> None:
    """Let the worker drain the queue, so that a revoke that did not hold would show by now: a
    probe sent last has its result only once the tasks popped before it have been admitted."""
    redis = sync_redis(url)
    try:
        poll(lambda: redis.llen(f"{prefix}:queue") == 0, 60, "the queue to drain")
    finally:
        redis.close()
    for _ in range(30):  # a fail-closed worker may still refuse one while its master has no
        probe = await client.find_task("quick").kiq(1)  # replica back yet: send another
        if (await probe.wait_result(timeout=30)).return_value == 2:
            return
    raise AssertionError("the worker never ran a probe task after the failover")


async def _lost(tally: Tally, events: Events, client: AsyncBroker) -> list[tuple[str, str, Any]]:
    """Outcomes contradicted by what the task did: ``revoked`` but its body started after the
    request, or was still running when abort() returned (it ended in ``finally`` later: a body
    that started earlier on a worker process that then died never does); ``aborted`` but the
    task ran to its end (no ``finally`` and a normal result; a task cancelled at its very first
    ``await`` never reaches its ``finally``, and one a fail-closed worker refused at its start
    ends with that error)."""
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


async def test_cluster_master_sigkilled(prefix: str, redis_url: str, events: Events) -> None:
    cluster = ClusterServers().start()
    try:
        tag = KeySpace(prefix).tag

        def failover() -> None:
            old = cluster.kill_owner(tag)
            old.start()  # back as a replica of the new master
            cluster.wait_healthy()

        survivor = next(n for n in cluster.nodes if n is not cluster.owner(tag))
        url = f"cluster://127.0.0.1:{survivor.port}"
        await _run(url, prefix, redis_url, events, failover, "cluster: SIGKILL the slot's master")
    finally:
        cluster.cleanup()


@pytest.mark.parametrize("kill", [False, True], ids=["sentinel-failover", "sigkill"])
async def test_sentinel_failover(prefix: str, redis_url: str, events: Events, kill: bool) -> None:
    sentinel = SentinelServers().start()
    try:

        def failover() -> None:
            old = sentinel.failover(kill=kill)
            if kill:
                old.start()  # the sentinels make it a replica of the new master
            sentinel.wait_healthy()

        hosts = ",".join(f"{h}:{p}" for h, p in sentinel.addresses)
        url = f"sentinel://{hosts}/{sentinel.master_name}"
        what = "SIGKILL the master" if kill else "SENTINEL FAILOVER"
        await _run(url, prefix, redis_url, events, failover, f"sentinel: {what}")
    finally:
        sentinel.cleanup()
