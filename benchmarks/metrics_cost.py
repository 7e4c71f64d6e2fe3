"""What abort metrics cost on the task path: ``python3 -m benchmarks.metrics_cost [--quick]``.

The method of the throughput benchmark (benchmarks/README.md, 2.): N no-op async tasks (with a
``RedisAsyncResultBackend``) are queued first, then one fresh ``taskiq worker --workers 1``
processes them; a run's time is the last task's ``CLOCK_MONOTONIC`` stamp minus the first's,
taken in the worker, so start-up is not counted. Three variants, alternating round by round:

- ``abort``: ``AbortMiddleware`` alone (for context);
- ``off``: taskiq's ``PrometheusMiddleware`` + ``AbortMiddleware`` (abort metrics off);
- ``on``: the same + ``AbortObservability()`` (abort metrics, tracing hooks, progress and the
  error-count patch of ``PrometheusMiddleware`` on).

``on / off`` is what abort observability costs a task that is not aborted. The workers load
``benchmarks.metrics_cost:broker``, built from ``BENCH_METRICS_*`` environment variables.

On a busy machine those runs vary more than the effect, so ``micro`` also times, in this
process, the only code ``AbortObservability`` adds to a task that is not aborted: its wrapper
around ``PrometheusMiddleware.post_execute`` (and ``OpenTelemetryMiddleware``'s), around a no-op
hook, best of 9 alternating batches of 200,000 calls; set against a task's time in ``off``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis.asyncio as aredis
from taskiq import AsyncBroker, TaskiqMiddleware
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from taskiq_abort import AbortMiddleware, AbortObservability
from tests.support.redis_servers import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("abort", "off", "on")


def now() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def make_broker(
    url: str, prefix: str, variant: str, tasks: int, metrics_dir: str = "", port: int = 0
) -> AsyncBroker:
    middlewares: list[TaskiqMiddleware] = []
    if variant in ("off", "on"):
        from taskiq.middlewares import PrometheusMiddleware

        middlewares.append(PrometheusMiddleware(Path(metrics_dir), server_port=port))
    if variant in VARIANTS:
        middlewares.append(AbortMiddleware(url, prefix=prefix))
    if variant == "on":
        middlewares.append(AbortObservability())
    broker = (
        RedisStreamBroker(url, queue_name=f"{prefix}:q", consumer_group_name=f"{prefix}:g")
        .with_result_backend(RedisAsyncResultBackend(url, prefix_str=f"{prefix}:r"))
        .with_middlewares(*middlewares)
    )
    stamps: list[float] = []

    @broker.task(task_name="noop")
    async def noop() -> None:
        stamps.append(now())
        if len(stamps) == tasks:  # one worker process: the last task reports the run
            client = aredis.Redis.from_url(url)
            try:
                await client.rpush(f"{prefix}:done", f"{stamps[0]} {stamps[-1]}")
            finally:
                await client.aclose()

    return broker


async def one_run(url: str, variant: str, tasks: int, workdir: str) -> float:
    prefix = f"mc{uuid.uuid4().hex[:8]}"
    client = make_broker(url, prefix, "client", tasks)  # no middlewares: it only queues
    await client.startup()  # creates the consumer group, so queued tasks are delivered
    try:
        noop = client.find_task("noop")
        assert noop is not None
        for _ in range(tasks):
            await noop.kiq()
    finally:
        await client.shutdown()
    env = {
        **os.environ,
        "BENCH_METRICS_URL": url,
        "BENCH_METRICS_PREFIX": prefix,
        "BENCH_METRICS_VARIANT": variant,
        "BENCH_METRICS_TASKS": str(tasks),
        "BENCH_METRICS_DIR": str(Path(workdir, prefix)),
        "BENCH_METRICS_PORT": str(free_port()),
        "PYTHONPATH": str(ROOT),
    }
    args = [sys.executable, "-m", "taskiq", "worker", "benchmarks.metrics_cost:broker"]
    args += ["--workers", "1", "--log-level", "WARNING", "--shutdown-timeout", "2"]
    log = Path(workdir, f"{prefix}.log")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args, env=env, cwd=ROOT, stdout=out, stderr=out, start_new_session=True
        )
    redis = aredis.Redis.from_url(url, decode_responses=True, socket_timeout=None)
    try:
        done = await redis.blpop([f"{prefix}:done"], timeout=300)  # an event, not a poll
        if done is None:
            raise TimeoutError(f"worker never finished; log:\n{log.read_text()[-3000:]}")
        first, last = map(float, done[1].split())
        return last - first
    finally:
        await redis.aclose()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its worker child too, not only `taskiq worker`
        proc.wait(10)


async def run(url: str, tasks: int, rounds: int) -> dict[str, Any]:
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as workdir:
        for r in range(rounds):
            order = VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS))
            for variant in order:
                times[variant].append(await one_run(url, variant, tasks, workdir))
    med = {v: statistics.median(t) for v, t in times.items()}
    return {
        "tasks": tasks,
        "rounds": rounds,
        "seconds": times,
        "median_seconds": med,
        "tasks_per_second": {v: tasks / s for v, s in med.items()},
        "ratio_on_off": med["on"] / med["off"],
        "ratio_off_abort": med["off"] / med["abort"],
        "spread_off": (max(times["off"]) - min(times["off"])) / med["off"],
        "loadavg": os.getloadavg(),
    }


def micro(calls: int = 200_000, batches: int = 9) -> dict[str, float]:
    """Seconds per call of a ``post_execute`` hook, plain and through our wrapper; the hook is
    a no-op, so that only the wrapper is timed. Batches alternate; the best of each counts."""
    from taskiq import TaskiqMessage, TaskiqResult

    from taskiq_abort.observability.error_counts import _without

    class Stub:
        found_errors = None

        def post_execute(self, message: Any, result: Any) -> None:
            pass

    stub = Stub()
    patched = _without(stub, "found_errors", stub.post_execute)
    hooks = {"plain": stub.post_execute, "patched": patched}
    message = TaskiqMessage(task_id="t", task_name="noop", labels={}, args=[], kwargs={})
    result: TaskiqResult[None] = TaskiqResult(is_err=False, return_value=None, execution_time=0)
    best = {name: float("inf") for name in hooks}
    for _ in range(batches):
        for name, hook in hooks.items():
            start = time.perf_counter()
            for _ in range(calls):
                hook(message, result)
            best[name] = min(best[name], (time.perf_counter() - start) / calls)
    return {
        "plain_s": best["plain"],
        "patched_s": best["patched"],
        "added_s": best["patched"] - best["plain"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="300 tasks, 2 rounds")
    parser.add_argument("--json", action="store_true", help="print the raw numbers as JSON")
    parser.add_argument("--micro", action="store_true", help="only the in-process timing")
    args = parser.parse_args(argv)
    tasks, rounds = (300, 2) if args.quick else (args.tasks, args.rounds)
    hook = micro(20_000 if args.quick else 200_000)
    added_us = hook["added_s"] * 1e6
    print(
        f"a no-op post_execute: {hook['plain_s'] * 1e6:.3f} us called plainly, "
        f"{hook['patched_s'] * 1e6:.3f} us through AbortObservability's wrapper "
        f"(+{added_us:.3f} us per task)"
    )
    if args.micro:
        return 0
    server = RedisServer().start()
    try:
        result = asyncio.run(run(server.url, tasks, rounds))
    finally:
        server.cleanup()
    if args.json:
        print(json.dumps(result, indent=2))
    print(f"{tasks} no-op tasks x {rounds} rounds, one worker process; median run time:")
    for variant in VARIANTS:
        med = result["median_seconds"][variant]
        print(f"  {variant:5} {med * 1000:8.1f} ms  ({tasks / med:7.0f} tasks/s)")
    print(f"on / off (abort observability's cost): {result['ratio_on_off']:.3f}")
    per_task_us = result["median_seconds"]["off"] / tasks * 1e6
    print(
        f"the wrapper's +{added_us:.2f} us against {per_task_us:.0f} us per task ('off'): "
        f"{1 + added_us / per_task_us:.4f}"
    )
    print(f"off / abort (taskiq's PrometheusMiddleware): {result['ratio_off_abort']:.3f}")
    print(f"spread of 'off' runs (max - min) / median: {result['spread_off']:.1%}")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in result['loadavg'])}")
    return 0


if "BENCH_METRICS_URL" in os.environ:
    broker = make_broker(
        os.environ["BENCH_METRICS_URL"],
        os.environ["BENCH_METRICS_PREFIX"],
        os.environ["BENCH_METRICS_VARIANT"],
        int(os.environ["BENCH_METRICS_TASKS"]),
        os.environ["BENCH_METRICS_DIR"],
        int(os.environ["BENCH_METRICS_PORT"]),
    )

if __name__ == "__main__":
    raise SystemExit(main())
