"""The cancellation driver's cost before an abort, in instructions rather than seconds.

    python3 -m benchmarks.driver_count [--awaits 50000]

CPU time varies by a few percent from run to run on a shared machine, which is the size of the
cost measured here. valgrind's callgrind counts the instructions a process executes: the same
count from run to run, whatever else the machine does. Each variant runs twice, with no await
and with ``--awaits`` awaits of ``asyncio.sleep(0)``; the difference over ``--awaits`` is its
cost per await:

- ``direct`` and ``stepping``: benchmarks.driver_floor's body awaited directly, and through a
  generator that forwards each step from Python (the least any driver costs that sees each
  step, as ours must to replace what a wake-up brings after its cancellation);
- ``none``, ``edge`` and ``level``: benchmarks.driver's task on ``InMemoryBroker``, without
  ``AbortMiddleware`` and with it in each ``cancel_mode``.

Needs valgrind (Debian: ``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys

from benchmarks.driver import _await_heavy
from benchmarks.driver_floor import _run

FLOOR = ("direct", "stepping")
TASKIQ = ("none", "edge", "level")


def _child(kind: str, awaits: int) -> None:
    if kind in FLOOR:
        asyncio.run(_run(kind, awaits))
    else:
        asyncio.run(_await_heavy(kind, awaits))


def _instructions(kind: str, awaits: int) -> int:
    command = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
        sys.executable, "-m", "benchmarks.driver_count", "--child", kind, str(awaits),
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True).stderr
    match = re.search(r"Collected : (\d+)", out)
    assert match, out[-2000:]
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--awaits", type=int, default=50_000)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "AWAITS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], int(args.child[1]))
        return
    per_await = {
        kind: (_instructions(kind, args.awaits) - _instructions(kind, 0)) / args.awaits
        for kind in FLOOR + TASKIQ
    }
    print(f"instructions per await ({args.awaits} awaits, callgrind):")
    for kind, cost in per_await.items():
        print(f"  {kind:<9} {cost:9.0f}")
    print(f"stepping: {per_await['stepping'] / per_await['direct']:.4f}x direct (the floor)")
    for mode in TASKIQ[1:]:
        print(f"{mode}: {per_await[mode] / per_await['none']:.4f}x none")


if __name__ == "__main__":
    main()
