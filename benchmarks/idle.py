"""3. Idle worker CPU, with and without the middleware, side by side (``idle``)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from taskiq import AsyncBroker

from benchmarks.procs import CLK_TCK, Worker, total_cpu_seconds
from benchmarks.session import Bench


async def run(bench: Bench) -> dict[str, Any]:
    """Both variants idle side by side over the same window."""
    variants: dict[str, tuple[Worker, AsyncBroker]] = {}
    try:
        for with_abort in (True, False):
            prefix = f"idle{uuid.uuid4().hex[:6]}"
            worker = Worker(bench.url, prefix, abort=with_abort).start()
            broker = await bench.client(prefix, abort=False)
            variants["with" if with_abort else "without"] = (worker, broker)
        for _worker, broker in variants.values():  # ready = it has run a task
            task = await broker.find_task("noop").kiq()  # type: ignore[union-attr]
            await task.wait_result(check_interval=0.05, timeout=60)
        await asyncio.sleep(1.0)  # let start-up work settle
        pids = {k: w.children() for k, (w, _) in variants.items()}
        before = {k: total_cpu_seconds(ps) for k, ps in pids.items()}
        t0 = time.monotonic()
        await asyncio.sleep(bench.p.idle_seconds)
        elapsed = time.monotonic() - t0
        after = {k: total_cpu_seconds(ps) for k, ps in pids.items()}
    finally:
        for worker, broker in variants.values():
            await broker.shutdown()
            worker.stop()
    pct = {k: round((after[k] - before[k]) / elapsed * 100, 3) for k in before}
    return {
        "seconds": round(elapsed, 2),
        "with_pct_of_core": pct["with"],
        "without_pct_of_core": pct["without"],
        "difference_pct_of_core": round(pct["with"] - pct["without"], 3),
        "clock_tick_s": 1 / CLK_TCK,
    }


def table(results: dict[str, Any]) -> list[str]:
    if "idle" not in results:
        return []
    idle = results["idle"]
    return [
        f"### 3. Idle worker CPU over {idle['seconds']} s (% of one core, worker children)",
        "",
        "| without | with | difference | target |",
        "|---|---|---|---|",
        f"| {idle['without_pct_of_core']:.2f}% | {idle['with_pct_of_core']:.2f}% "
        f"| {idle['difference_pct_of_core']:+.2f}% | < 1% |",
        "",
    ]
