"""4. Scale: abort latency vs tasks running (``scale``) and vs worker processes (``workers``).

``scale`` also runs 5. bulk abort and 6. memory on the same worker, which has ``p.bulk`` tasks
running by then (and 5.'s no-op throughput on a fresh worker with the same options).
"""

from __future__ import annotations

import uuid
from typing import Any

from benchmarks import bulk, memory
from benchmarks.procs import Worker, poll_until, rss_bytes
from benchmarks.session import Bench
from benchmarks.stats import fmt_ms
from taskiq_abort._wire.keys import KeySpace


async def run_tasks(bench: Bench) -> dict[str, Any]:
    """Latency at each of ``p.scale_levels`` tasks running; then bulk abort and memory."""
    p = bench.p
    prefix = f"scl{uuid.uuid4().hex[:6]}"
    top = max(p.scale_levels)
    max_async = 2 * top + 1000
    worker = Worker(bench.url, prefix, max_async=max_async).start()
    broker = await bench.client(prefix)
    levels: dict[str, Any] = {}
    mem: dict[str, Any] = {}
    bulks: dict[str, Any] = {}
    try:
        (wid,) = await bench.wait_registered(worker, 1)
        (child,) = worker.children()
        tasks_key = KeySpace(prefix).tasks(wid)
        background: list[str] = []
        rss_before = 0
        for level in sorted(p.scale_levels):
            more = level - 1 - len(background)
            background += await bench.kick_many(broker, "hold", more, count=True)
            await bench.wait_counter(f"{prefix}:running", len(background), worker, 300)
            await poll_until(
                lambda n=len(background): bench.hlen_at_least(tasks_key, n),
                60,
                "registry",
                worker,
            )
            series = await bench.series(broker, prefix, p.scale_probes)
            levels[str(level)] = series.report()
            if level == 1:
                rss_before = rss_bytes(child)
            bench.log(f"  scale: {level} running: {levels[str(level)]['to_finally_ms']}")
        # Exactly `bulk` tasks running for memory and the bulk abort.
        more = p.bulk - len(background)
        if more > 0:
            background += await bench.kick_many(broker, "hold", more, count=True)
            await bench.wait_counter(f"{prefix}:running", len(background), worker, 300)
        await poll_until(
            lambda n=len(background): bench.hlen_at_least(tasks_key, n), 60, "registry"
        )
        mem = await memory.running(
            bench, prefix, wid, rss_before, rss_bytes(child), len(background)
        )
        bulks["api"] = await bulk.by_id(bench, broker, prefix, background)
        mem["redis_request_record_bytes"] = await memory.request_record(
            bench, prefix, background[0]
        )
        bulks["by_name"] = await bulk.by_name(bench, broker, prefix, worker, tasks_key)
        bulks["many"] = await bulk.many(bench, broker, prefix, worker, tasks_key)
        bulks["noop"] = await bulk.noop_throughput(bench, max_async)
    finally:
        await broker.shutdown()
        worker.stop()
    mem["baseline"] = await memory.baseline(bench)
    base = mem["baseline"]["worker_rss_delta_bytes_per_task"]
    mem["worker_extra_bytes_per_task"] = mem["worker_rss_delta_bytes_per_task"] - base
    return {"levels": levels, "memory": mem, "bulk": bulks}


async def run_workers(bench: Bench) -> dict[str, Any]:
    """Latency with ``--workers N`` processes, all listening on the control channel."""
    out: dict[str, Any] = {}
    for count in bench.p.worker_counts:
        prefix = f"wrk{uuid.uuid4().hex[:6]}"
        worker = Worker(bench.url, prefix, workers=count).start()
        broker = await bench.client(prefix)
        try:
            await bench.wait_registered(worker, count)
            out[str(count)] = (await bench.series(broker, prefix, bench.p.worker_probes)).report()
        finally:
            await broker.shutdown()
            worker.stop()
        bench.log(f"  scale: {count} worker(s): {out[str(count)]['to_finally_ms']}")
    return out


def table(results: dict[str, Any]) -> list[str]:
    if "scale" not in results and "scale_workers" not in results:
        return []
    lines = [
        "### 4. Scale: abort latency (ms, p50 / p99) vs tasks running and worker processes",
        "",
        "| setting | floor | (a) to `finally` | (b) to return | (a) p50 vs floor |",
        "|---|---|---|---|---|",
    ]
    rows = [
        (f"{int(level):,} task(s) running, 1 worker", rep)
        for level, rep in results.get("scale", {}).get("levels", {}).items()
    ]
    rows += [
        (f"{count} worker process(es)", rep)
        for count, rep in results.get("scale_workers", {}).items()
    ]
    for label, rep in rows:
        lines.append(
            f"| {label} | {fmt_ms(rep['floor_ms'])} | {fmt_ms(rep['to_finally_ms'])} "
            f"| {fmt_ms(rep['to_return_ms'])} | {rep['ratio_finally_p50']:.2f}x |"
        )
    lines.append("")
    return lines
