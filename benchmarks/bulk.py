"""5. Bulk abort of running tasks in one worker, until every result is stored (in ``scale``)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from taskiq import AsyncBroker

from benchmarks.app import now
from benchmarks.procs import Worker, poll_until
from benchmarks.session import Bench
from taskiq_abort import abort, find_middleware


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


def table(results: dict[str, Any]) -> list[str]:
    if "scale" not in results:
        return []
    bulk = results["scale"]["bulk"]
    lines = [
        "### 5. Bulk abort of running tasks in one worker (until every result is stored)",
        "",
        f"{bulk['api']['concurrency']} `abort()` calls in flight at a time.",
        "",
        "| how | tasks | all `abort()`s returned | all results stored | aborts/s | statuses |",
        "|---|---|---|---|---|---|",
    ]
    hows = (
        ("api", "`abort()` for each id"),
        ("by_name", "by task name (`backend.workers()` + `abort()`)"),
    )
    for how, label in hows:
        b = bulk.get(how)
        if b:
            lines.append(
                f"| {label} | {b['tasks']:,} | {b['all_returned_s']:.2f} s "
                f"| {b['all_stored_s']:.2f} s | {b['aborts_per_s']:,} | {b['statuses']} |"
            )
    lines.append("")
    return lines
