"""1. Abort latency of a running async task, next to the pub/sub floor (``latency``)."""

from __future__ import annotations

import uuid
from typing import Any

from benchmarks.procs import Worker
from benchmarks.session import Bench
from benchmarks.stats import fmt_ms


async def run(bench: Bench) -> dict[str, Any]:
    prefix = f"lat{uuid.uuid4().hex[:6]}"
    worker = Worker(bench.url, prefix).start()
    broker = await bench.client(prefix)
    try:
        await bench.wait_registered(worker, 1)
        series = await bench.series(broker, prefix, bench.p.latency_aborts)
    finally:
        await broker.shutdown()
        worker.stop()
    return {**series.report(), "samples_ms": series.samples_ms()}


def table(results: dict[str, Any]) -> list[str]:
    if "latency" not in results:
        return []
    lat = results["latency"]
    return [
        "### 1. Abort latency, running async task (ms, p50 / p99)",
        "",
        "| measure | p50 / p99 | p50 vs floor | target |",
        "|---|---|---|---|",
        f"| pub/sub floor (PUBLISH → subscriber in another process) "
        f"| {fmt_ms(lat['floor_ms'])} | 1.00x | |",
        f"| (a) `abort()` called → task's `finally` runs | {fmt_ms(lat['to_finally_ms'])} "
        f"| {lat['ratio_finally_p50']:.2f}x | p50 ≤ 2x, p99 < 5 ms |",
        f"| (b) `abort()` called → returns `aborted` | {fmt_ms(lat['to_return_ms'])} "
        f"| {lat['ratio_return_p50']:.2f}x | p50 ≤ 3x |",
        f"\n{lat['to_finally_ms']['n']} aborts, statuses {lat['statuses']}.",
        "",
    ]
