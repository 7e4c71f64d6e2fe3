"""5. Bulk abort of running tasks in one worker, until every result is stored (in ``scale``):
``abort()`` per id, by name, ``abort_many()``; and the same app's no-op task throughput through a
worker with the same options, measured in the same run, for the ratio (issue 8's goal)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import redis
from taskiq import AsyncBroker

from benchmarks.app import now, result_prefix
from benchmarks.procs import Worker, poll_until
from benchmarks.session import Bench
from benchmarks.throughput import _stamp
from taskiq_abort import abort, abort_many, find_middleware


async def _abort_all(
    bench: Bench, broker: AsyncBroker, ids: Sequence[str]
) -> tuple[dict[str, int], list[str]]:
    """Abort every id, ``bulk_concurrency`` calls in flight; (statuses, ids aborted)."""
    gate = asyncio.Semaphore(bench.bulk_concurrency)

    async def one(tid: str) -> str:
        async with gate:
            try:
                return str((await abort(broker, tid, timeout=120)).status.value)
            except Exception as exc:
                return type(exc).__name__

    outcomes = await asyncio.gather(*(one(tid) for tid in ids))
    statuses: dict[str, int] = {}
    for o in outcomes:
        statuses[o] = statuses.get(o, 0) + 1
    return statuses, [t for t, o in zip(ids, outcomes, strict=True) if o == "aborted"]


async def _timed(
    bench: Bench,
    broker: AsyncBroker,
    prefix: str,
    ids: list[str],
    t0: float,
    label: str,
    **extra: float,
) -> dict[str, Any]:
    """Abort ``ids`` and time it, from ``t0`` until every result is stored."""
    statuses, aborted = await _abort_all(bench, broker, ids)
    t_returned = now()
    await bench.wait_results(prefix, aborted)
    t1 = now()
    out = {
        "tasks": len(ids),
        **extra,
        "all_returned_s": round(t_returned - t0, 3),
        "all_stored_s": round(t1 - t0, 3),
        "aborts_per_s": round(len(ids) / (t1 - t0)),
        "statuses": statuses,
        "concurrency": bench.bulk_concurrency,
    }
    bench.log(f"  {label}: {out}")
    return out


async def by_id(bench: Bench, broker: AsyncBroker, prefix: str, ids: list[str]) -> dict[str, Any]:
    """``abort()`` for each of ``ids`` (tasks running in the worker)."""
    return await _timed(bench, broker, prefix, ids, now(), "bulk via API")


async def by_name(
    bench: Bench, broker: AsyncBroker, prefix: str, worker: Worker, tasks_key: str
) -> dict[str, Any]:
    """``p.bulk`` tasks of another name, found with ``backend.workers()``, then aborted."""
    n = bench.p.bulk
    await poll_until(lambda: bench.hlen_is(tasks_key, 0), 120, "bulk-aborted tasks to end")
    await bench.kick_many(broker, "hold_named", n)
    await bench.wait_counter(f"{prefix}:running_named", n, worker, 300)
    await poll_until(lambda: bench.hlen_at_least(tasks_key, n), 60, "registry")
    backend = find_middleware(broker).backend
    t0 = now()
    listing = await backend.workers()
    ids = [t.task_id for w in listing for t in w.tasks if t.task_name == "hold_named"]
    listed = round(now() - t0, 3)
    return await _timed(bench, broker, prefix, ids, t0, "bulk by name", list_s=listed)


async def many(
    bench: Bench, broker: AsyncBroker, prefix: str, worker: Worker, tasks_key: str
) -> dict[str, Any]:
    """``abort_many()`` of ``p.bulk`` running tasks (ids known), one call."""
    n = bench.p.bulk
    counter = f"{prefix}:running_named"
    await poll_until(lambda: bench.hlen_is(tasks_key, 0), 120, "earlier aborted tasks to end")
    before = int(await bench.r.get(counter) or 0)
    ids = await bench.kick_many(broker, "hold_named", n)
    await bench.wait_counter(counter, before + n, worker, 300)
    await poll_until(lambda: bench.hlen_at_least(tasks_key, n), 60, "registry")
    t0 = now()
    try:
        outcomes = [o.status.value for o in await abort_many(broker, ids, timeout=120)]
    except Exception as exc:
        outcomes = [type(exc).__name__] * len(ids)
    t_returned = now()
    aborted = [t for t, o in zip(ids, outcomes, strict=True) if o == "aborted"]
    await bench.wait_results(prefix, aborted)
    t1 = now()
    statuses: dict[str, int] = {}
    for o in outcomes:
        statuses[o] = statuses.get(o, 0) + 1
    out = {
        "tasks": n,
        "all_returned_s": round(t_returned - t0, 3),
        "all_stored_s": round(t1 - t0, 3),
        "aborts_per_s": round(n / (t1 - t0)),
        "statuses": statuses,
    }
    bench.log(f"  bulk via abort_many: {out}")
    return out


async def noop_throughput(bench: Bench, max_async: int) -> dict[str, Any]:
    """``p.bulk`` no-op tasks of the same app (with the middleware), queued first, through a
    fresh worker with the bulk worker's options: its tasks/s from the first task's stamp to the
    last one's (as the burst benchmark measures it), next to the aborts/s above."""
    prefix = f"nop{uuid.uuid4().hex[:6]}"
    n = bench.p.bulk
    broker = await bench.client(prefix)
    try:
        ids = await bench.kick_many(broker, "noop", n)
    finally:
        await broker.shutdown()
    keys = [f"{result_prefix(prefix)}:{tid}" for tid in ids]
    worker = Worker(bench.url, prefix, max_async=max_async).start()
    try:

        async def done() -> bool:  # one cheap read while it runs, the exact check at the end
            if not await bench.r.exists(keys[-1]):
                return False
            chunks = (keys[i : i + 5000] for i in range(0, n, 5000))
            return sum([int(await bench.r.exists(*chunk)) for chunk in chunks]) == n

        await poll_until(done, 600, "no-op tasks", worker)
    finally:
        worker.stop()
    raw = redis.Redis.from_url(bench.url)  # results are pickled: read them as bytes
    try:
        stamps = sorted(_stamp(v) for i in range(0, n, 5000) for v in raw.mget(keys[i : i + 5000]))
    finally:
        raw.close()
    seconds = stamps[-1][0] - stamps[0][0]
    out = {"tasks": n, "seconds": round(seconds, 3), "tasks_per_s": round((n - 1) / seconds)}
    bench.log(f"  no-op throughput, same options: {out}")
    return out


def table(results: dict[str, Any]) -> list[str]:
    if "scale" not in results:
        return []
    bulk = results["scale"]["bulk"]
    lines = [
        "### 5. Bulk abort of running tasks in one worker (until every result is stored)",
        "",
        f"{bulk['api']['concurrency']} `abort()` calls in flight at a time in the first two "
        "rows; `abort_many()` is one call.",
        "",
        "| how | tasks | all `abort()`s returned | all results stored | aborts/s | statuses |",
        "|---|---|---|---|---|---|",
    ]
    hows = (
        ("api", "`abort()` for each id"),
        ("by_name", "by task name (`backend.workers()` + `abort()`)"),
        ("many", "`abort_many()` for the ids, one call"),
    )
    for how, label in hows:
        b = bulk.get(how)
        if b:
            lines.append(
                f"| {label} | {b['tasks']:,} | {b['all_returned_s']:.2f} s "
                f"| {b['all_stored_s']:.2f} s | {b['aborts_per_s']:,} | {b['statuses']} |"
            )
    noop, many_row = bulk.get("noop"), bulk.get("many")
    if noop and many_row:
        lines += [
            "",
            f"The worker's own no-op throughput, same run: {noop['tasks_per_s']:,} tasks/s "
            f"({noop['tasks']:,} no-op tasks queued first, a fresh worker with the same "
            f"options). `abort_many()`: {many_row['aborts_per_s']:,} aborts/s, "
            f"{many_row['aborts_per_s'] / noop['tasks_per_s']:.2f}x that (goal: at least 1x).",
        ]
    lines.append("")
    return lines
