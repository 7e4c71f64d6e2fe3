"""What the cancellation driver costs an async task body, before and after an abort.

    python3 -m benchmarks.driver [--rounds 7] [--awaits 200000] [--cleanup 20000]

In one process (``InMemoryBroker``, the in-process abort backend), CPU time
(``time.process_time``) only, so other jobs on the machine matter less than to wall time:

1. **Before an abort**: a task body of ``--awaits`` ``await asyncio.sleep(0)``, on a broker
   without ``AbortMiddleware`` (``none``) and with it in each ``cancel_mode``. Variants
   alternate within a round (their order turns each round); the ratio of each round's two runs,
   then the median over the rounds.
2. **Clean-up after an abort**: a body suspended ``depth`` coroutine calls deep whose
   ``finally`` block awaits ``asyncio.sleep(0)`` ``--cleanup`` times, stopped by ``abort()``
   (edge mode) or, the reference, the same coroutine in a plain task stopped by
   ``Task.cancel()``; CPU from the abort (cancel) to the task's end, alternating.

Only public API: the same command measures any version of the package.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from taskiq import InMemoryBroker

from benchmarks.stats import median, ratio
from taskiq_abort import AbortMiddleware

MODES = ("none", "edge", "level")
DEPTHS = (0, 50, 200)


def _broker(mode: str) -> InMemoryBroker:
    broker = InMemoryBroker()
    if mode != "none":
        broker.add_middlewares(AbortMiddleware(cancel_mode=mode))  # type: ignore[arg-type]
    return broker


async def _await_heavy(mode: str, awaits: int) -> float:
    """CPU seconds of one task of ``awaits`` bare suspensions, kick to result."""
    broker = _broker(mode)

    @broker.task(task_name="busy")
    async def busy() -> int:
        for _ in range(awaits):
            await asyncio.sleep(0)
        return awaits

    await broker.startup()
    try:
        t0 = time.process_time()
        result = await (await busy.kiq()).wait_result(timeout=600)
        spent = time.process_time() - t0
        assert result.return_value == awaits, result
    finally:
        await broker.shutdown()
    return spent


async def _nested(depth: int, cleanup: int, started: asyncio.Event) -> None:
    if depth:
        await _nested(depth - 1, cleanup, started)
        return
    try:
        started.set()
        await asyncio.sleep(3600)
    finally:
        for _ in range(cleanup):
            await asyncio.sleep(0)


async def _cleanup_aborted(depth: int, cleanup: int) -> float:
    broker = _broker("edge")
    started = asyncio.Event()

    @broker.task(task_name="deep")
    async def deep() -> None:
        await _nested(depth, cleanup, started)

    await broker.startup()
    try:
        handle = await deep.kiq()
        await started.wait()
        t0 = time.process_time()
        outcome = await handle.abort(timeout=600)  # type: ignore[attr-defined]
        spent = time.process_time() - t0
        assert outcome.status.value == "aborted", outcome
    finally:
        await broker.shutdown()
    return spent


async def _cleanup_cancelled(depth: int, cleanup: int) -> float:
    started = asyncio.Event()
    task = asyncio.ensure_future(_nested(depth, cleanup, started))
    await started.wait()
    t0 = time.process_time()
    task.cancel()
    await asyncio.wait([task])
    return time.process_time() - t0


async def _alternate(
    rounds: int, a: Callable[[], Awaitable[float]], b: Callable[[], Awaitable[float]]
) -> dict[str, Any]:
    """Medians of ``a`` and ``b`` and of the per-round ratios a/b, the order turning."""
    runs_a, runs_b, ratios = [], [], []
    for i in range(rounds):
        if i % 2:
            y, x = await b(), await a()
        else:
            x, y = await a(), await b()
        runs_a.append(x)
        runs_b.append(y)
        ratios.append(ratio(x, y))
    return {
        "a_ms": round(median(runs_a) * 1000, 1),
        "b_ms": round(median(runs_b) * 1000, 1),
        "ratio": round(median(ratios), 3),
    }


async def measure(rounds: int, awaits: int, cleanup: int) -> dict[str, Any]:
    await _await_heavy("none", 1000)  # warm-up: imports, first loop iterations
    before = {
        mode: await _alternate(
            rounds, lambda m=mode: _await_heavy(m, awaits), lambda: _await_heavy("none", awaits)
        )
        for mode in MODES[1:]
    }
    after = {
        depth: await _alternate(
            rounds,
            lambda d=depth: _cleanup_aborted(d, cleanup),
            lambda d=depth: _cleanup_cancelled(d, cleanup),
        )
        for depth in DEPTHS
    }
    return {"before_abort": before, "cleanup_after_abort": after}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--awaits", type=int, default=200_000)
    parser.add_argument("--cleanup", type=int, default=20_000)
    args = parser.parse_args()
    load = os.getloadavg()
    results = asyncio.run(measure(args.rounds, args.awaits, args.cleanup))
    print(f"| body of {args.awaits:,} awaits | CPU, driver (ms) | CPU, none (ms) | ratio |")
    print("|---|---:|---:|---:|")
    for mode, row in results["before_abort"].items():
        print(f"| `cancel_mode={mode!r}` | {row['a_ms']} | {row['b_ms']} | {row['ratio']}x |")
    print()
    print(
        f"| clean-up of {args.cleanup:,} awaits at depth | CPU, abort() (ms) "
        "| CPU, Task.cancel() (ms) | ratio |"
    )
    print("|---|---:|---:|---:|")
    for depth, row in results["cleanup_after_abort"].items():
        print(f"| {depth} | {row['a_ms']} | {row['b_ms']} | {row['ratio']}x |")
    print(f"\nrounds: {args.rounds}; load average before: {load}, after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
