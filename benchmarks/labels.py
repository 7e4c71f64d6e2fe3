"""9. Abort by labels: what indexing labels costs a task start, and ``abort_where`` in bulk.

- **Start-check cost** (``labels``): trickle runs (tasks one at a time, as benchmarks/trickle.py:
  each start pays its own ``SYNC``) of no-op tasks kicked with a ``tenant`` label, through one
  fresh worker with ``AbortMiddleware`` declaring ``index_labels=("tenant",)`` (the label goes
  into the registry entry, and ``SYNC`` reads the (empty) rules set) or declaring none (the
  label is inert), in alternating rounds; worker CPU per task and the paired ratio.
- **Bulk** (``labels``): ``p.bulk`` tasks running in one worker (with ``index_labels``), then
  aborted by ``abort_where(broker, {"tenant": ...})`` or by ``abort_many`` of their ids (known
  to the caller), alternating; from the call until every result is stored.
- **Rules in force** (``labels``): Redis's own time (``INFO commandstats``) per ``SYNC`` of one
  labelled start that no rule matches, with 0, 1,000 and 10,000 rules in force on other label
  values (as a cascade over a bulk abort leaves them: two per id, for ``request_ttl``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable
from typing import Any

from taskiq import AsyncBroker

from benchmarks.app import make_broker, now
from benchmarks.procs import Worker, poll_until
from benchmarks.session import Bench
from benchmarks.stats import median
from benchmarks.throughput import Run, alternate_pair, compare_pair
from benchmarks.trickle import keyspace_notifications, measure
from taskiq_abort import abort_many, abort_where
from taskiq_abort.backends.redis import RedisAbortBackend
from taskiq_abort.outcome import AbortRule, RunningEntry

INDEX = "tenant"
LABELS = {INDEX: "acme"}


async def _client(bench: Bench, prefix: str) -> AsyncBroker:
    broker = make_broker(bench.url, prefix, "stream", True, index=(INDEX,))
    await broker.startup()
    return broker


async def _trickle(bench: Bench, indexed: bool, notify: bool) -> Run:
    await bench.r.flushdb()
    prefix = f"lb{uuid.uuid4().hex[:6]}"
    broker = await _client(bench, prefix)
    worker = Worker(bench.url, prefix, index=INDEX if indexed else "").start()
    try:
        noop = broker.find_task("noop").kicker().with_labels(**LABELS)  # type: ignore[union-attr]
        return await measure(bench, prefix, worker, notify, noop)
    finally:
        await broker.shutdown()
        worker.stop()


async def start_cost(bench: Bench) -> dict[str, Any]:
    # Results are waited for as benchmarks/trickle.py does: a keyspace notification (polling
    # would round each task's time up to the poll interval, and the worker's idle CPU with it).
    async with keyspace_notifications(bench, "labels") as notify:

        def one(variant: str) -> Awaitable[Run]:
            return _trickle(bench, variant == "index", notify)

        runs = await alternate_pair(bench.p.trickle_rounds, "none", "index", one)
    out = {
        **compare_pair(bench.p.trickle_tasks, runs, "none", "index"),
        "rounds": bench.p.trickle_rounds,
    }
    bench.log(f"  labels start cost: {out}")
    return out


async def _bulk_once(bench: Bench, how: str) -> dict[str, Any]:
    await bench.r.flushdb()
    prefix = f"lw{uuid.uuid4().hex[:6]}"
    n = bench.p.bulk
    broker = await _client(bench, prefix)
    worker = Worker(bench.url, prefix, max_async=n + 1000, index=INDEX).start()
    try:
        tenant = {INDEX: f"t{uuid.uuid4().hex[:6]}"}
        ids = await bench.kick_many(broker, "hold_named", n, labels=tenant)
        await bench.wait_counter(f"{prefix}:running_named", n, worker, 600)
        tasks_key = f"{{{prefix}}}:tasks:"

        async def registered() -> bool:
            keys = [k async for k in bench.r.scan_iter(match=tasks_key + "*")]
            return bool(keys) and sum([int(await bench.r.hlen(k)) for k in keys]) >= n

        await poll_until(registered, 120, "the registry to show every task", worker)
        t0 = now()
        if how == "where":
            summary = await abort_where(broker, tenant, timeout=120)
            outcomes = summary.running
        else:
            outcomes = await abort_many(broker, ids, timeout=120)
        t_returned = now()
        aborted = [o.task_id for o in outcomes if o.status.value == "aborted"]
        await bench.wait_results(prefix, aborted)
        t1 = now()
    finally:
        await broker.shutdown()
        worker.stop()
    statuses: dict[str, int] = {}
    for o in outcomes:
        statuses[o.status.value] = statuses.get(o.status.value, 0) + 1
    return {
        "tasks": n,
        "all_returned_s": round(t_returned - t0, 3),
        "all_stored_s": round(t1 - t0, 3),
        "aborts_per_s": round(n / (t1 - t0)),
        "statuses": statuses,
    }


async def bulk(bench: Bench, rounds: int = 2) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"where": [], "many": []}
    for rnd in range(rounds):
        for how in ("where", "many") if rnd % 2 == 0 else ("many", "where"):
            runs[how].append(one := await _bulk_once(bench, how))
            bench.log(f"  labels bulk {how}: {one}")
    return {
        how: {"runs": rs, "aborts_per_s": round(median([r["aborts_per_s"] for r in rs]))}
        for how, rs in runs.items()
    }


async def rules_in_force(bench: Bench, counts: tuple[int, ...], starts: int) -> dict[str, float]:
    """Redis µs per start check (one labelled start, matched by no rule) by rules in force."""
    out: dict[str, float] = {}
    for count in counts:
        backend = RedisAbortBackend(bench.url, prefix=f"lr{uuid.uuid4().hex[:6]}")
        try:
            await backend.register("w1", {}, [])
            rules = [
                AbortRule(f"r{i}", {INDEX: f"t{i}"}, None, f"bench {i}", 0.0, 0.0, "bench")
                for i in range(count)
            ]
            await backend.add_rules(rules, 600)
            await bench.r.config_resetstat()
            for i in range(starts):
                start = RunningEntry(f"s{i}", "noop", f"r{i}", time.time(), labels=((INDEX, "x"),))
                await backend.sync("w1", [start], [start])
            stats = await bench.r.info("commandstats")
            out[str(count)] = round(float(stats["cmdstat_evalsha"]["usec_per_call"]), 1)
        finally:
            await backend.close()
    return out


async def run(bench: Bench) -> dict[str, Any]:
    counts = (0, 1000, 10_000) if bench.p.bulk >= 1000 else (0, 100)
    return {
        "start_cost": await start_cost(bench),
        "bulk": await bulk(bench),
        "rules_in_force_sync_us": await rules_in_force(bench, counts, 300),
    }


def table(results: dict[str, Any]) -> list[str]:
    if "labels" not in results:
        return []
    r = results["labels"]
    c, b = r["start_cost"], r["bulk"]
    n = b["where"]["runs"][0]["tasks"]
    return [
        "### 9. Abort by labels",
        "",
        "Worker CPU per no-op task kicked with a `tenant` label, trickle (one start per `SYNC`):",
        "",
        "| index_labels | none (µs) | ('tenant',) (µs) | paired ratio | target |",
        "|---|---|---|---|---|",
        f"| | {c['none_cpu_us_per_task']} | {c['index_cpu_us_per_task']} "
        f"| {c['paired_cpu_ratio']:.3f} | ≤ 1.03 |",
        "",
        f"{n:,} running tasks in one worker, aborted until every result is stored (aborts/s, "
        "median of rounds):",
        "",
        "| abort_where (by label) | abort_many (by id) |",
        "|---|---|",
        f"| {b['where']['aborts_per_s']:,} | {b['many']['aborts_per_s']:,} |",
        "",
        "Redis time per start check (`SYNC`) of one labelled start that no rule matches, by "
        "rules in force on other label values (µs, `INFO commandstats`):",
        "",
        "| " + " | ".join(f"{int(n):,} rules" for n in r["rules_in_force_sync_us"]) + " |",
        "|" + "---|" * len(r["rules_in_force_sync_us"]),
        "| " + " | ".join(str(v) for v in r["rules_in_force_sync_us"].values()) + " |",
        "",
    ]
