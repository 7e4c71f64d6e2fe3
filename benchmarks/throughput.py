"""2. Throughput and worker CPU per no-op task, with and without the middleware.

Two regimes, each for ``RedisStreamBroker`` and ``ListQueueBroker``, in alternating rounds:

- **burst** (``throughput``): every task is queued before one fresh worker starts;
- **trickle** (``trickle``, benchmarks/trickle.py): a worker already running, tasks kicked one
  after another, each once the previous one's result is stored.

Three variants: the bare broker (``without``), with ``AbortMiddleware`` (``with``), and the
task-start floor (``floor``: the bare broker with a middleware that awaits one raw round trip
to Redis per start, benchmarks/start_floor.py). Ours is reported against both.
"""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis

from benchmarks.app import result_prefix
from benchmarks.procs import Worker, poll_until
from benchmarks.session import Bench
from benchmarks.stats import median, ratio

BROKERS = ("stream", "list")
VARIANTS = ("without", "with", "floor")


@dataclass(frozen=True)
class Run:
    """One run of one variant: wall-clock seconds and worker CPU seconds, same window."""

    seconds: float
    cpu_s: float


async def alternate(
    bench: Bench,
    label: str,
    rounds: int,
    tasks: int,
    intervals: int,
    one: Callable[[str, str], Awaitable[Run]],
) -> dict[str, Any]:
    """``rounds`` rounds per broker of every variant, the order turning each round;
    summarized."""
    out: dict[str, Any] = {}
    for kind in BROKERS:
        runs: dict[str, list[Run]] = {variant: [] for variant in VARIANTS}
        for rnd in range(rounds):
            turn = rnd % len(VARIANTS)
            for variant in VARIANTS[turn:] + VARIANTS[:turn]:
                runs[variant].append(await one(kind, variant))
        out[kind] = summarize(tasks, intervals, runs)
        bench.log(f"  {label} {kind}: {out[kind]}")
    return out


async def alternate_pair(
    rounds: int, base: str, other: str, one: Callable[[str], Awaitable[Run]]
) -> dict[str, list[Run]]:
    """``rounds`` runs of each of two variants, which goes first turning each round."""
    runs: dict[str, list[Run]] = {base: [], other: []}
    for rnd in range(rounds):
        for variant in (base, other) if rnd % 2 == 0 else (other, base):
            runs[variant].append(await one(variant))
    return runs


def compare_pair(tasks: int, runs: dict[str, list[Run]], base: str, other: str) -> dict[str, Any]:
    """Worker CPU per task of two variants (``tasks`` per run): medians and per-round ratios
    of ``other`` to ``base``."""
    cpu = {k: [r.cpu_s / tasks * 1e6 for r in vs] for k, vs in runs.items()}
    paired = [ratio(a, b) for a, b in zip(cpu[other], cpu[base], strict=True)]
    return {
        "tasks": tasks,
        "cpu_us_per_task": {k: [round(v, 1) for v in vs] for k, vs in cpu.items()},
        f"{base}_cpu_us_per_task": round(median(cpu[base]), 1),
        f"{other}_cpu_us_per_task": round(median(cpu[other]), 1),
        "paired_cpu_ratios": [round(v, 3) for v in paired],
        "paired_cpu_ratio": round(median(paired), 3),
    }


def summarize(tasks: int, intervals: int, runs: dict[str, list[Run]]) -> dict[str, Any]:
    """Medians per variant and per-round ratios; ``intervals`` tasks fall in each window."""
    secs = {k: [r.seconds for r in vs] for k, vs in runs.items()}
    cpu_us = {k: [r.cpu_s / intervals * 1e6 for r in vs] for k, vs in runs.items()}
    # Each round's two runs are back to back: their ratio is less exposed to other jobs'
    # bursts than the ratio of medians over the whole benchmark.
    paired = [w / wo for w, wo in zip(secs["with"], secs["without"], strict=True)]
    paired_cpu = [ratio(w, wo) for w, wo in zip(cpu_us["with"], cpu_us["without"], strict=True)]
    paired_floor = [ratio(w, f) for w, f in zip(cpu_us["with"], cpu_us["floor"], strict=True)]
    without, with_ = median(secs["without"]), median(secs["with"])
    cpu_without, cpu_with = median(cpu_us["without"]), median(cpu_us["with"])
    cpu_floor = median(cpu_us["floor"])
    return {
        "tasks": tasks,
        "runs_s": {k: [round(v, 3) for v in vs] for k, vs in secs.items()},
        "without_tasks_per_s": round(intervals / without),
        "with_tasks_per_s": round(intervals / with_),
        "slowdown_pct": round((with_ / without - 1) * 100, 1),
        "paired_slowdown_pct": round((median(paired) - 1) * 100, 1),
        "cpu_us_per_task": {k: [round(v, 1) for v in vs] for k, vs in cpu_us.items()},
        "without_cpu_us_per_task": round(cpu_without, 1),
        "with_cpu_us_per_task": round(cpu_with, 1),
        "cpu_ratio": round(ratio(cpu_with, cpu_without), 3),
        "paired_cpu_ratios": [round(v, 3) for v in paired_cpu],
        "paired_cpu_ratio": round(median(paired_cpu), 3),
        "floor_cpu_us_per_task": round(cpu_floor, 1),
        "floor_cpu_ratio": round(ratio(cpu_floor, cpu_without), 3),
        "paired_cpu_ratios_to_floor": [round(v, 3) for v in paired_floor],
        "paired_cpu_ratio_to_floor": round(median(paired_floor), 3),
    }


def _stamp(raw: bytes | None) -> tuple[float, float]:
    """(monotonic stamp, worker CPU seconds) returned by a ``noop`` task."""
    assert raw is not None  # results are pickled by the result backend; our own server's data
    wall, cpu = pickle.loads(raw)["return_value"]
    return float(wall), float(cpu)


def start_worker(bench: Bench, prefix: str, kind: str, variant: str) -> Worker:
    """A fresh worker of one variant (see the module's docstring)."""
    return Worker(
        bench.url, prefix, kind=kind, abort=variant == "with", start_floor=variant == "floor"
    ).start()


async def burst_run(
    bench: Bench, kind: str, variant: str, labels: dict[str, Any] | None = None
) -> Run:
    """``tp_tasks`` no-op tasks (kicked with ``labels``), queued first, through one fresh
    worker.

    Wall-clock and CPU both span the first task's stamp to the last one's (so worker start-up
    is not counted): each ``noop`` returns its monotonic stamp and its process's CPU time.
    """
    await bench.r.flushdb()
    prefix = f"tp{uuid.uuid4().hex[:6]}"
    n = bench.p.tp_tasks
    broker = await bench.client(prefix, kind, abort=False)
    try:
        ids = await bench.kick_many(broker, "noop", n, labels=labels)
    finally:
        await broker.shutdown()
    keys = [f"{result_prefix(prefix)}:{tid}" for tid in ids]
    worker = start_worker(bench, prefix, kind, variant)
    try:
        # Cheap O(1) poll while it runs; one exact check once enough keys exist.
        async def done() -> bool:
            return int(await bench.r.dbsize()) >= n and (await bench.r.exists(*keys)) == n

        await poll_until(done, 600, "throughput run", worker)
    finally:
        worker.stop()
    raw = redis.Redis.from_url(bench.url)  # results are pickled: read them as bytes
    try:
        stamps = sorted(_stamp(v) for v in raw.mget(keys))
    finally:
        raw.close()
    (first_wall, first_cpu), (last_wall, last_cpu) = stamps[0], stamps[-1]
    return Run(last_wall - first_wall, last_cpu - first_cpu)


async def burst(bench: Bench) -> dict[str, Any]:
    """The burst regime (``throughput``): ``tp_rounds`` alternating rounds per broker."""
    p = bench.p

    def one(kind: str, variant: str) -> Awaitable[Run]:
        return burst_run(bench, kind, variant)

    # tp_tasks - 1 intervals between the first stamp and the last
    return await alternate(bench, "burst", p.tp_rounds, p.tp_tasks, p.tp_tasks - 1, one)


def table(results: dict[str, Any]) -> list[str]:
    regimes = [
        (key, label)
        for key, label in (("throughput", "burst"), ("trickle", "trickle"))
        if key in results
    ]
    if not regimes:
        return []
    lines = [
        "### 2. Throughput and worker CPU per no-op task, one worker process "
        "(medians of alternating rounds)",
        "",
        "| regime | broker | tasks | rounds | without (tasks/s) | with AbortMiddleware "
        "| slowdown (per-round median) | worker CPU per task without / with (µs) "
        "| CPU with ÷ without (per-round median) "
        "| floor's CPU per task (µs) | CPU with ÷ floor (per-round median) | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, label in regimes:
        for kind, tp in results[key].items():
            rounds = len(tp["runs_s"]["with"])
            lines.append(
                f"| {label} | {kind} | {tp['tasks']:,} | {rounds} "
                f"| {tp['without_tasks_per_s']:,} | {tp['with_tasks_per_s']:,} "
                f"| {tp['slowdown_pct']:+.1f}% ({tp['paired_slowdown_pct']:+.1f}%) "
                f"| {tp['without_cpu_us_per_task']:,.0f} / {tp['with_cpu_us_per_task']:,.0f} "
                f"| {tp['cpu_ratio']:.2f}x ({tp['paired_cpu_ratio']:.2f}x) "
                f"| {tp['floor_cpu_us_per_task']:,.0f} "
                f"| {tp['paired_cpu_ratio_to_floor']:.3f}x | ≤ 1.05x the floor |"
            )
    lines.append("")
    return lines
