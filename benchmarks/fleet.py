"""7. Fleet size (``fleet``): abort latency and Redis CPU per abort vs registered workers.

For each size N in ``p.fleet_sizes``: one real ``taskiq worker`` (stream broker, with the
middleware) holds the aborted tasks, and N - 1 simulated workers are registered by
``benchmarks/fleet_worker.py`` in up to ``p.fleet_helpers`` helper processes (each simulated
worker an ``InMemoryBroker`` with its own ``AbortMiddleware``: a registration, a heartbeat and a
subscription to the control channel, like a real worker process). The benchmark process aborts
as in 1. (``bench.series``, floor interleaved), and reads redis-server's utime + stime from
/proc before and after the measured aborts.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from typing import Any

from benchmarks.procs import Proc, Worker, poll_until, total_cpu_seconds
from benchmarks.session import Bench
from benchmarks.stats import fmt_ms
from taskiq_abort import find_middleware


def split(total: int, parts: int) -> list[int]:
    """``total`` as ``parts`` near-equal positive counts (none if ``total`` is 0)."""
    parts = min(parts, total)
    return [total // parts + (i < total % parts) for i in range(parts)] if parts else []


async def _wait_ready(bench: Bench, key: str, helpers: list[Proc], timeout: float) -> None:
    ready, deadline = 0, time.monotonic() + timeout
    while ready < len(helpers):
        if await bench.r.blpop([key], timeout=1) is not None:
            ready += 1
            continue
        for helper in helpers:
            helper.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"fleet: {ready} of {len(helpers)} helper processes ready")


def _cpu(pids: list[int]) -> float:
    return total_cpu_seconds(pids) if pids else 0.0


async def one_size(bench: Bench, size: int) -> dict[str, Any]:
    p = bench.p
    prefix = f"flt{uuid.uuid4().hex[:6]}"
    ready_key = f"{prefix}:fleet-ready"
    counts = split(size - 1, p.fleet_helpers)
    worker = Worker(bench.url, prefix).start()
    helpers = [
        Proc(
            [sys.executable, "-m", "benchmarks.fleet_worker", bench.url, prefix, str(k), ready_key],
            f"{prefix}-fleet{i}",
        ).start()
        for i, k in enumerate(counts)
    ]
    broker = await bench.client(prefix)
    try:
        await _wait_ready(bench, ready_key, helpers, 600)
        backend = find_middleware(broker).backend
        registered = 0

        async def all_registered() -> bool:
            nonlocal registered
            registered = len(await backend.workers())
            return registered >= size

        await poll_until(all_registered, 120, f"{size} registered workers", worker, 0.2)
        await bench.warm_up(broker, prefix)
        redis_pids = [bench.redis_pid] if bench.redis_pid else []
        # The idle fleet first: what Redis spends on it anyway (heartbeats), per second.
        idle0, t_idle = _cpu(redis_pids), time.monotonic()
        await asyncio.sleep(p.fleet_idle_seconds)
        idle_rate = (_cpu(redis_pids) - idle0) / (time.monotonic() - t_idle)
        fleet_pids, worker_pids = [h.pid for h in helpers], worker.children()
        before = [_cpu(redis_pids), _cpu(fleet_pids), _cpu(worker_pids)]
        t0 = time.monotonic()
        series = await bench.series(broker, prefix, p.fleet_probes, warm_up=False)
        elapsed = time.monotonic() - t0
        after = [_cpu(redis_pids), _cpu(fleet_pids), _cpu(worker_pids)]
    finally:
        await broker.shutdown()
        Proc.terminate(helpers, grace=30)  # they deregister; a kill would leave leases behind
        worker.stop()
    n = p.fleet_probes
    redis_s, fleet_s, worker_s = (a - b for a, b in zip(after, before, strict=True))
    per_abort = {
        "redis_cpu_us_per_abort": round(redis_s / n * 1e6, 1),
        "redis_cpu_us_per_abort_net": round((redis_s - idle_rate * elapsed) / n * 1e6, 1),
        "redis_idle_pct_of_core": round(idle_rate * 100, 2),
    }
    return {
        **series.report(),
        "registered_workers": registered,
        "simulated_workers": size - 1,
        "helper_processes": len(helpers),
        "aborts": n,
        "loop_s": round(elapsed, 3),
        **(per_abort if redis_pids else {}),
        "fleet_cpu_us_per_abort": round(fleet_s / n * 1e6, 1),
        "worker_cpu_us_per_abort": round(worker_s / n * 1e6, 1),
    }


async def run(bench: Bench) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size in bench.p.fleet_sizes:
        out[str(size)] = await one_size(bench, size)
        rep = out[str(size)]
        bench.log(
            f"  fleet {size}: finally {rep['to_finally_ms']}, "
            f"redis {rep.get('redis_cpu_us_per_abort')} us/abort"
        )
    return out


def _us(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}%"


def table(results: dict[str, Any]) -> list[str]:
    if "fleet" not in results:
        return []
    fleet = results["fleet"]
    base = next(iter(fleet.values()))["to_finally_ms"]["p50"]
    lines = [
        "### 7. Fleet size: abort latency (ms, p50 / p99) and CPU per abort vs registered workers",
        "",
        "| registered workers (helper processes) | floor | (a) to `finally` | (b) to return "
        "| (a) p50 vs smallest | Redis CPU per abort, µs (net of idle) | Redis idle, % of core "
        "| simulated fleet CPU per abort, µs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size, rep in fleet.items():
        lines.append(
            f"| {int(size):,} ({rep['helper_processes']}) | {fmt_ms(rep['floor_ms'])} "
            f"| {fmt_ms(rep['to_finally_ms'])} | {fmt_ms(rep['to_return_ms'])} "
            f"| {rep['to_finally_ms']['p50'] / base:.2f}x "
            f"| {_us(rep.get('redis_cpu_us_per_abort'))} "
            f"({_us(rep.get('redis_cpu_us_per_abort_net'))}) "
            f"| {_pct(rep.get('redis_idle_pct_of_core'))} "
            f"| {_us(rep['fleet_cpu_us_per_abort'])} |"
        )
    lines.append("")
    return lines
