"""How fast the admin CLI answers: ``python3 -m benchmarks.cli_startup [--runs N]``.

hyperfine-style: each command runs ``--runs`` times as a fresh process (after one warm-up run),
and the table shows the median and the spread of the wall time, from ``fork`` to exit:

- ``python -c pass``: the interpreter alone, the floor no command can beat;
- ``import taskiq``: what every command paid before the CLI stopped importing taskiq;
- ``taskiq-abort ls --redis-url``: with one task running on a real ``taskiq worker``;
- ``taskiq-abort ID --redis-url``: aborting one running task (a fresh one each run), until the
  worker confirmed ``aborted``.

It starts a throwaway redis-server and one worker (``benchmarks.app``) and stops both.
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
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis

from taskiq_abort._wire.keys import KeySpace
from tests.support.redis_servers import RedisServer

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "taskiq_abort.cli"]


def timed(args: Sequence[str], env: dict[str, str]) -> float:
    """Wall seconds of one run of ``args``; raises if it fails."""
    start = time.perf_counter()
    proc = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return elapsed


def stats(samples: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_s": round(statistics.median(ordered), 4),
        "min_s": round(ordered[0], 4),
        "max_s": round(ordered[-1], 4),
        "runs": len(ordered),
    }


class Bench:
    """A Redis, one worker, and a client that starts tasks for the abort runs."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"cli{uuid.uuid4().hex[:8]}"
        self.env = {**os.environ, "BENCH_URL": url, "BENCH_PREFIX": self.prefix}
        self.env["PYTHONPATH"] = str(ROOT)
        self.worker: subprocess.Popen[bytes] | None = None
        self.sync = redis.Redis.from_url(url, decode_responses=True)

    def start_worker(self) -> None:
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "taskiq", "worker", "benchmarks.app:broker", "--workers", "1"],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its worker children are stopped with it, by group
        )
        deadline = time.monotonic() + 60
        while not self.sync.zcard(KeySpace(self.prefix).workers):
            if self.worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the benchmark worker did not register")
            time.sleep(0.05)  # polling the registry the worker writes: no event to block on

    async def running_task(self) -> str:
        """Start a ``hold`` task and return its id once the worker runs it."""
        from benchmarks.app import events_key, make_broker

        broker = make_broker(self.url, self.prefix)
        await broker.startup()
        try:
            task = await broker.find_task("hold").kiq(report=True)  # type: ignore[union-attr]
        finally:
            await broker.shutdown()
        popped = self.sync.blpop([events_key(self.prefix, task.task_id)], timeout=30)
        if popped is None:
            raise RuntimeError(f"task {task.task_id} never started")
        return str(task.task_id)

    def cli(self, *args: str) -> list[str]:
        return [*CLI, *args, "--redis-url", self.url, "--prefix", self.prefix]

    def close(self) -> None:
        if self.worker is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.worker.pid, signal.SIGKILL)
            self.worker.wait(10)
        self.sync.close()


def measure(runs: int, url: str, log: Callable[[str], None]) -> dict[str, Any]:
    bench = Bench(url)
    try:
        bench.start_worker()
        asyncio.run(bench.running_task())  # one task runs while `ls` is timed
        env = bench.env
        results: dict[str, Any] = {}
        simple = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "import taskiq": [sys.executable, "-c", "import taskiq"],
            "taskiq-abort ls --redis-url": bench.cli("ls"),
        }
        for label, args in simple.items():
            timed(args, env)  # warm-up: the page cache, as hyperfine's --warmup 1
            results[label] = stats([timed(args, env) for _ in range(runs)])
            log(f"{label}: {results[label]}")
        samples = []
        for index in range(runs + 1):
            task_id = asyncio.run(bench.running_task())
            elapsed = timed(bench.cli(task_id, "--reason", "benchmark"), env)
            if index:  # the first is the warm-up
                samples.append(elapsed)
        results["taskiq-abort ID --redis-url (aborted)"] = stats(samples)
        log(f"abort: {results['taskiq-abort ID --redis-url (aborted)']}")
        return results
    finally:
        bench.close()


def table(results: dict[str, Any]) -> str:
    lines = ["| command | median | min | max | runs |", "|---|---:|---:|---:|---:|"]
    for label, row in results.items():
        lines.append(
            f"| `{label}` | {row['median_s'] * 1000:.0f} ms | {row['min_s'] * 1000:.0f} ms "
            f"| {row['max_s'] * 1000:.0f} ms | {row['runs']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.cli_startup", description=__doc__)
    parser.add_argument("--runs", type=int, default=15, help="timed runs per command (15)")
    parser.add_argument("--url", help="a Redis of yours (default: a throwaway redis-server)")
    parser.add_argument("--out", type=Path, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    server = None if args.url else RedisServer().start()
    try:
        url = args.url or server.url  # type: ignore[union-attr]
        results = measure(max(1, args.runs), url, log)
    finally:
        if server is not None:
            server.cleanup()
    load = os.getloadavg()
    print(f"CLI start-up, wall time per run ({os.cpu_count()} cores, load {load[0]:.2f}):\n")
    print(table(results))
    if args.out:
        args.out.write_text(json.dumps({"results": results, "loadavg": load}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
