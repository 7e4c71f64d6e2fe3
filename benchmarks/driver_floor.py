"""The floor of a cancellation driver's cost before an abort (`python3 -m benchmarks.driver_floor`).

The same body of 200,000 ``await asyncio.sleep(0)`` awaited directly, through a generator that
delegates with ``yield from`` (stepped in C), and through a generator that forwards each
``send``/``throw`` from Python (what a driver that sees every step costs at the least). CPU time,
variants alternating, medians of the ratios to the direct await."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Coroutine, Generator
from typing import Any


async def _body(awaits: int) -> None:
    for _ in range(awaits):
        await asyncio.sleep(0)


class _Delegating:
    def __init__(self, coro: Coroutine[Any, Any, None]) -> None:
        self.coro = coro

    def __await__(self) -> Generator[Any, Any, None]:
        return (yield from self.coro.__await__())


class _Stepping:
    def __init__(self, coro: Coroutine[Any, Any, None]) -> None:
        self.coro = coro

    def __await__(self) -> Generator[Any, Any, None]:
        coro, value, thrown = self.coro, None, None
        while True:
            try:
                yielded = coro.send(value) if thrown is None else coro.throw(thrown)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            thrown = None
            try:
                value = yield yielded
            except BaseException as exc:
                thrown, value = exc, None


async def _run(kind: str, awaits: int) -> None:
    coro = _body(awaits)
    if kind == "direct":
        await coro
    elif kind == "yield from":
        await _Delegating(coro)
    else:
        await _Stepping(coro)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--awaits", type=int, default=200_000)
    args = parser.parse_args()
    kinds = ("direct", "yield from", "stepping")
    cpu: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(args.rounds):
        for kind in kinds:
            start = time.process_time()
            asyncio.run(_run(kind, args.awaits))
            cpu[kind].append(time.process_time() - start)
    for kind in kinds[1:]:
        ratio = statistics.median(a / b for a, b in zip(cpu[kind], cpu["direct"], strict=True))
        print(f"{kind}: {ratio:.3f}x the direct await ({args.rounds} rounds)")


if __name__ == "__main__":
    main()
