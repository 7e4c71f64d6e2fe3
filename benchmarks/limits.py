"""8. Time limits: how far past its hard limit a body stops, and what carrying limits costs.

- **Overshoot** (``limits``): one worker (``interrupt_threads=True``) runs, one at a time,
  ``limit_samples`` async tasks that sleep and as many sync tasks that spin in a pure-Python
  loop, each kicked with ``time_limit=LIMIT``. Each body stamps its start and, first thing in
  its ``finally``, its stop (CLOCK_MONOTONIC); overshoot = stop - start - LIMIT.
- **Cost**: burst runs of no-op tasks through one fresh worker with ``AbortMiddleware``, kicked
  with ``soft_time_limit`` and ``time_limit`` (far away: nothing fires, every timer is armed
  and cancelled) or with two labels of the same size that nothing reads, in alternating
  rounds; worker CPU per task, as in benchmarks/throughput.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from typing import Any

from benchmarks.app import events_key
from benchmarks.procs import Worker
from benchmarks.session import Bench
from benchmarks.stats import summary_ms
from benchmarks.throughput import BROKERS, Run, alternate_pair, burst_run, compare_pair

LIMIT = 0.05  # seconds: short, so that the samples take little time
FAR = {"soft_time_limit": 3000, "time_limit": 3600}  # never reached by a no-op task
# The baseline carries as many labels, of the same size, that nothing reads: what taskiq
# itself spends on labels is in both variants, and the difference is ours.
INERT = {"soft_time_limix": 3000, "time_limix": 3600}


async def _overshoot(bench: Bench, name: str) -> list[float]:
    await bench.r.flushdb()
    prefix = f"lim{uuid.uuid4().hex[:6]}"
    broker = await bench.client(prefix, "stream", abort=True)
    worker = Worker(bench.url, prefix, kind="stream", interrupt=True).start()
    samples: list[float] = []
    try:
        kicker = broker.find_task(name).kicker().with_labels(time_limit=LIMIT)  # type: ignore[union-attr]
        for _ in range(bench.p.limit_samples):
            task = await kicker.kiq()
            key = events_key(prefix, task.task_id)
            stamps: dict[str, float] = {}
            while len(stamps) < 2:  # started, stopped: pushed by the task itself
                popped = await bench.r.blpop([key], timeout=30)
                if popped is None:
                    worker.check_alive()
                    raise TimeoutError(f"limits: {name} {task.task_id} never reported its stop")
                event, stamp = popped[1].split()
                stamps[event] = float(stamp)
            samples.append(stamps["stopped"] - stamps["started"] - LIMIT)
            await task.wait_result(timeout=30)  # its result stored: the worker is free again
    finally:
        await broker.shutdown()
        worker.stop()
    return samples


async def run(bench: Bench) -> dict[str, Any]:
    out: dict[str, Any] = {"limit_s": LIMIT}
    for body, name in (("async", "limit_async"), ("sync", "limit_sync")):
        out[f"overshoot_{body}_ms"] = summary_ms(await _overshoot(bench, name))
        bench.log(f"  limits overshoot {body}: {out[f'overshoot_{body}_ms']}")
    for kind in BROKERS:

        def one(variant: str, kind: str = kind) -> Awaitable[Run]:
            return burst_run(bench, kind, "with", FAR if variant == "limits" else INERT)

        runs = await alternate_pair(bench.p.tp_rounds, "none", "limits", one)
        out[kind] = compare_pair(bench.p.tp_tasks, runs, "none", "limits")
        bench.log(f"  limits cost {kind}: {out[kind]}")
    return out


def table(results: dict[str, Any]) -> list[str]:
    if "limits" not in results:
        return []
    r = results["limits"]
    lines = [
        f"### 8. Time limits: overshoot past a {r['limit_s'] * 1000:.0f} ms hard limit (ms)",
        "",
        "| body | n | p50 | p99 | max |",
        "|---|---|---|---|---|",
    ]
    for body in ("async", "sync"):
        s = r[f"overshoot_{body}_ms"]
        lines.append(f"| {body} | {s['n']} | {s['p50']:.3f} | {s['p99']:.3f} | {s['max']:.3f} |")
    lines += [
        "",
        "Worker CPU per no-op task, far-off limits vs inert labels (burst, median of rounds):",
        "",
        "| broker | none (µs) | limits (µs) | paired ratio | target |",
        "|---|---|---|---|---|",
    ]
    for kind in BROKERS:
        c = r[kind]
        lines.append(
            f"| {kind} | {c['none_cpu_us_per_task']} | {c['limits_cpu_us_per_task']} "
            f"| {c['paired_cpu_ratio']:.3f} | ≤ 1.02 |"
        )
    return [*lines, ""]
