"""6. Memory per running task: worker RSS with and without the middleware, and in Redis.

Measured inside ``scale`` (which has ``p.bulk`` tasks running anyway), plus a baseline worker.
"""

from __future__ import annotations

import uuid
from typing import Any

from benchmarks.procs import Worker, rss_bytes
from benchmarks.session import Bench
from taskiq_abort._wire.keys import KeySpace


async def running(
    bench: Bench, prefix: str, wid: str, rss_before: int, rss_after: int, n_running: int
) -> dict[str, Any]:
    """Worker RSS growth and the Redis registry's size, with ``n_running`` tasks running."""
    redis_tasks = await bench.memory_usage(KeySpace(prefix).tasks(wid))
    redis_worker = await bench.memory_usage(KeySpace(prefix).worker(wid))
    return {
        "running_tasks": n_running,
        "worker_rss_delta_bytes_per_task": round((rss_after - rss_before) / n_running),
        "redis_registry_bytes_per_task": round(redis_tasks / n_running, 1),
        "redis_registry_total_bytes": redis_tasks,
        "redis_worker_hash_bytes": redis_worker,
    }


async def request_record(bench: Bench, prefix: str, task_id: str) -> int:
    """Bytes of one abort request record (``{<prefix>}:req:<id>``)."""
    return await bench.memory_usage(KeySpace(prefix).request(task_id))


async def baseline(bench: Bench) -> dict[str, Any]:
    """The same running tasks in a worker without the middleware."""
    prefix = f"mem{uuid.uuid4().hex[:6]}"
    n = bench.p.bulk
    worker = Worker(bench.url, prefix, abort=False, max_async=2 * n + 1000).start()
    broker = await bench.client(prefix, abort=False)
    try:
        await bench.kick_many(broker, "hold", 1, count=True)  # warm up: one task running
        await bench.wait_counter(f"{prefix}:running", 1, worker, 60)
        (child,) = worker.children()
        before = rss_bytes(child)
        await bench.kick_many(broker, "hold", n, count=True)
        await bench.wait_counter(f"{prefix}:running", n + 1, worker, 300)
        after = rss_bytes(child)
    finally:
        await broker.shutdown()
        worker.stop()
    return {"running_tasks": n, "worker_rss_delta_bytes_per_task": round((after - before) / n)}


def table(results: dict[str, Any]) -> list[str]:
    if "scale" not in results:
        return []
    mem = results["scale"]["memory"]
    return [
        f"### 6. Memory per running task ({mem['running_tasks']:,} tasks running)",
        "",
        "| where | bytes per task |",
        "|---|---|",
        f"| worker RSS, with AbortMiddleware | {mem['worker_rss_delta_bytes_per_task']:,} |",
        f"| worker RSS, without (baseline) "
        f"| {mem['baseline']['worker_rss_delta_bytes_per_task']:,} |",
        f"| worker RSS, the middleware's share | {mem['worker_extra_bytes_per_task']:,} |",
        f"| Redis, running-task registry (`MEMORY USAGE {{<prefix>}}:tasks:<worker>`) "
        f"| {mem['redis_registry_bytes_per_task']:,} |",
        f"| Redis, one abort request record (`{{<prefix>}}:req:<id>`, kept `request_ttl`) "
        f"| {mem['redis_request_record_bytes']:,} |",
        "",
    ]
