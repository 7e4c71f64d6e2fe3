"""How fast ``interrupt_threads=True`` stops a sync task that never checks its token.

    python3 -m benchmarks.interrupt [--n 200]

In one process (``InMemoryBroker``, taskiq's thread pool, the in-process abort backend): a sync
task spins in a pure-Python loop; once it runs, ``abort()`` is called, and we record (a) the
time until the loop was left (the body's thread records when the exception landed) and (b) the
time until ``abort()`` returned ``aborted`` (the result stored, the worker's confirmation
heard). The interpreter's switch interval (5 ms by default) bounds how soon the event loop's
thread gets the GIL from the spinning thread, so both are shown for the default and for
``sys.setswitchinterval(0.001)``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from typing import Any

from taskiq import InMemoryBroker

from benchmarks.stats import fmt_ms, summary_ms
from taskiq_abort import AbortMiddleware, AbortStatus


async def measure(n: int) -> dict[str, Any]:
    broker = InMemoryBroker().with_middlewares(AbortMiddleware(interrupt_threads=True))
    loop = asyncio.get_running_loop()
    started = asyncio.Event()
    left: list[float] = []

    @broker.task(task_name="spin")
    def spin() -> None:
        try:  # the interrupt may land anywhere in the body, this call included
            loop.call_soon_threadsafe(started.set)
            while True:
                pass
        finally:
            left.append(time.perf_counter())

    await broker.startup()
    stopped, returned = [], []
    try:
        for _ in range(n):
            started.clear()
            task = await spin.kiq()
            await started.wait()
            t0 = time.perf_counter()
            outcome = await task.abort(timeout=10)  # type: ignore[attr-defined]
            returned.append(time.perf_counter() - t0)
            assert outcome.status is AbortStatus.ABORTED, outcome
            stopped.append(left[-1] - t0)
    finally:
        await broker.shutdown()
    return {"to_stop_ms": summary_ms(stopped), "to_return_ms": summary_ms(returned)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="aborts per switch interval")
    args = parser.parse_args()
    default = sys.getswitchinterval()
    rows = []
    for interval in (default, 0.001):
        sys.setswitchinterval(interval)
        result = asyncio.run(measure(args.n))
        rows.append(
            f"| {interval * 1000:g} ms | {fmt_ms(result['to_stop_ms'])} "
            f"| {fmt_ms(result['to_return_ms'])} | {args.n} |"
        )
    sys.setswitchinterval(default)
    print("| switch interval | (a) abort() → loop left, p50 / p99 (ms) "
          "| (b) abort() returns `aborted`, p50 / p99 (ms) | aborts |")  # fmt: skip
    print("|---|---|---|---|")
    print("\n".join(rows))
    print(f"\nthreads: {threading.active_count()}, load average: {__import__('os').getloadavg()}")


if __name__ == "__main__":
    main()
