"""Load (issue 4, point 7): one worker runs 10,000 tasks at once; abort them all.

Half are aborted through their handles, all at once (``asyncio.gather``); the other half by name,
found in the registry (``backend.workers()``) and aborted in one bulk abort (``abort_many``), the
way an operator's bulk abort does it.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from taskiq_abort import AbortStatus, TaskAbortedError, abort_many, find_middleware
from tests.faultkit import apoll, client_broker, held, rss_of

pytestmark = pytest.mark.anyio

N = int(os.environ.get("TASKIQ_ABORT_LOAD_TASKS", "10000"))
MB = 1 << 20


async def _chunked(coros, size: int = 1000) -> list:
    """Run coroutines ``size`` at a time (kicks and result reads; aborts go all at once)."""
    out: list = []
    for i in range(0, len(coros), size):
        out += await asyncio.gather(*coros[i : i + size])
    return out


async def _introspect(client) -> dict:
    return (await (await client.find_task("introspect").kiq()).wait_result(timeout=60)).return_value


@pytest.mark.heavy
@pytest.mark.timeout(300)
async def test_ten_thousand_running_tasks_all_aborted(redis_url, prefix, worker_factory) -> None:
    worker = worker_factory(extra_args=("--max-async-tasks", str(N + 100))).start()
    (child,) = worker.child_pids()
    async with client_broker(redis_url, prefix) as client:
        base = await _introspect(client)
        idle = client.find_task("idle")
        started = time.monotonic()
        tasks = await _chunked([idle.kiq(3600) for _ in range(N)])
        await apoll(lambda: _holds_at_least(client, N), 180, f"{N} tasks running", interval=0.5)
        peak = await _introspect(client)
        peak_rss = rss_of(child)
        running_at = time.monotonic()

        # Half through their handles, all at once.
        first = tasks[: N // 2]
        outcomes = await asyncio.gather(*(t.abort(reason="load", timeout=120) for t in first))
        handles_at = time.monotonic()
        # The other half by name, from the registry, in one bulk abort.
        # (It may still list a few of the first half: their entries are dropped in the worker's
        # next registry batch, just after the confirmation. Aborting those again is harmless.)
        by_name = [tid for tid, name in (await held(client)).items() if name == "idle"]
        assert {t.task_id for t in tasks[N // 2 :]} <= set(by_name)
        outcomes += await abort_many(client, by_name, reason="by name", timeout=120)
        aborted_at = time.monotonic()

        statuses = {o.status for o in outcomes}
        if statuses != {AbortStatus.ABORTED}:  # say what happened to the others
            odd = [o for o in outcomes if o.status is not AbortStatus.ABORTED]
            backend = find_middleware(client).backend
            records = await backend.get_requests([o.task_id for o in odd[:5]])
            state = await _introspect(client)
            print(len(odd), odd[:3], records, len(state["running"]), worker.log.read_text()[-3000:])
        assert statuses == {AbortStatus.ABORTED}, statuses
        assert {o.task_id for o in outcomes} == {t.task_id for t in tasks}
        results = await _chunked([t.wait_result(timeout=60) for t in tasks])
        errors = [r.error for r in results]
        assert all(isinstance(e, TaskAbortedError) for e in errors), {type(e) for e in errors}
        assert {e.reason for e in errors} == {"load", "by name"}

        # Nothing left behind: no registry entry, no running attempt, no stray asyncio task.
        try:
            await apoll(lambda: _holds_none(client), 30, "an empty registry")
        except AssertionError:
            left = await held(client)
            print(len(left), list(left.items())[:5], worker.log.read_text()[-3000:])
            raise
        after = await _introspect(client)
        assert len(after["running"]) == 1  # the introspect task itself
        assert after["pending_starts"] == after["pending_finishes"] == after["confirms"] == 0
        assert after["run_objects"] <= base["run_objects"] + 2
        assert after["asyncio_tasks"] <= base["asyncio_tasks"] + 5
        # Memory. RSS does not drop back: CPython and malloc keep freed arenas for reuse. What
        # must come back is the memory held by live objects (pymalloc blocks): within a fifth
        # of what 10,000 running tasks needed (finished ids stay in a bounded 10,000-entry
        # "recently finished" map on purpose). RSS gets only a generous sanity ceiling.
        print(
            f"{N} tasks: kicked+running in {running_at - started:.1f} s, all aborted in "
            f"{aborted_at - running_at:.1f} s (handles {handles_at - running_at:.1f} s, by name "
            f"{aborted_at - handles_at:.1f} s); RSS baseline {base['rss'] / MB:.0f} MB, "
            f"peak {peak_rss / MB:.0f} MB, after {after['rss'] / MB:.0f} MB; live blocks "
            f"{base['blocks']} -> {peak['blocks']} -> {after['blocks']}"
        )
        assert after["blocks"] - base["blocks"] < (peak["blocks"] - base["blocks"]) / 5
        assert after["rss"] < base["rss"] + 500 * MB


async def _holds_at_least(client, n: int) -> bool:
    return len(await held(client)) >= n


async def _holds_none(client) -> bool:
    return not await held(client)
