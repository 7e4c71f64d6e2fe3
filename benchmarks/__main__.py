"""Run taskiq-abort's benchmarks against a throwaway redis-server and real workers.

``python3 -m benchmarks`` (full), ``--quick`` (a small run), ``--only NAME ...`` (some of them).
Prints a table, writes ``benchmarks/results/<date>[-<profile>].json`` and a latency CDF plot
next to it. See benchmarks/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from benchmarks import (
    bulk,
    fleet,
    idle,
    labels,
    latency,
    limits,
    memory,
    scale,
    throughput,
    trickle,
)
from benchmarks.procs import Proc, raise_fd_limit
from benchmarks.profiles import PROFILES, Profile
from benchmarks.report import RESULTS, git_commit, load_snapshot, loadavg, machine, plot
from benchmarks.session import Bench
from tests.support.redis_servers import RedisServer


@dataclass(frozen=True)
class Step:
    """One benchmark: the key of its results, the progress line, the coroutine."""

    key: str
    title: str
    run: Callable[[Bench], Awaitable[dict[str, Any]]]


# Run in this order; ``--only`` picks by name.
STEPS: dict[str, Step] = {
    "latency": Step("latency", "1. abort latency vs pub/sub floor...", latency.run),
    "scale": Step("scale", "4-6. scale with running tasks, bulk abort, memory...", scale.run_tasks),
    "workers": Step("scale_workers", "4. scale with worker processes...", scale.run_workers),
    "throughput": Step(
        "throughput", "2. throughput with and without the middleware (burst)...", throughput.burst
    ),
    "trickle": Step("trickle", "2b. throughput and CPU per task, trickle...", trickle.run),
    "idle": Step("idle", "3. idle CPU...", idle.run),
    "fleet": Step("fleet", "7. fleet size: abort latency and Redis CPU...", fleet.run),
    "limits": Step("limits", "8. time limits: overshoot and cost...", limits.run),
    "labels": Step(
        "labels", "9. abort by labels: start-check cost, abort_where in bulk...", labels.run
    ),
}
# The printed report, in this order.
TABLES = (
    latency.table,
    throughput.table,
    idle.table,
    scale.table,
    bulk.table,
    memory.table,
    fleet.table,
    limits.table,
    labels.table,
)


def table(results: dict[str, Any]) -> str:
    """The human-readable summary (also pasted into benchmarks/README.md)."""
    return "\n".join(line for section in TABLES for line in section(results))


async def run(
    profile: Profile,
    url: str,
    only: Iterable[str],
    log: Callable[[str], None],
    bulk_concurrency: int = 64,
    redis_pid: int | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(results, load average before and after each benchmark)."""
    bench = Bench(profile, url, log, redis_pid=redis_pid, bulk_concurrency=bulk_concurrency)
    results: dict[str, Any] = {}
    loads: dict[str, Any] = {}
    wanted = set(only)
    try:
        await bench.start_floor()
        for name, step in STEPS.items():
            if name in wanted:
                log(step.title)
                before = loadavg()
                results[step.key] = await step.run(bench)
                loads[name] = {"before": before, "after": loadavg()}
    finally:
        await bench.close()
    return results, loads


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, Profile]:
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small run (a few minutes)")
    parser.add_argument("--profile", choices=sorted(PROFILES), help="full, quick or smoke")
    parser.add_argument("--only", nargs="+", choices=list(STEPS), default=list(STEPS))
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for JSON and plot")
    parser.add_argument(
        "--bulk-concurrency",
        type=int,
        default=64,
        help="abort() calls in flight in the bulk benchmark (default 64: a redis-py pool "
        "holds at most 100 connections per client)",
    )
    parser.add_argument(
        "--name", help="file name stem for the JSON and plot (default: <date>[-<profile>])"
    )
    parser.add_argument("--url", help="use this Redis instead of starting one (not 6379!)")
    parser.add_argument("--latency-aborts", type=int, help="override: aborts measured in 1.")
    parser.add_argument("--tp-tasks", type=int, help="override: tasks per burst throughput run")
    parser.add_argument("--tp-rounds", type=int, help="override: burst throughput rounds")
    parser.add_argument("--trickle-tasks", type=int, help="override: tasks per trickle run")
    parser.add_argument("--trickle-rounds", type=int, help="override: trickle rounds")
    parser.add_argument(
        "--fleet-sizes", type=int, nargs="+", help="override: registered workers, e.g. 1 10 100"
    )
    parser.add_argument("--fleet-probes", type=int, help="override: aborts per fleet size")
    parser.add_argument(
        "--fleet-helpers", type=int, help="override: processes holding the simulated workers"
    )
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile or ("quick" if args.quick else "full")]
    overrides = {
        "latency_aborts": args.latency_aborts,
        "tp_tasks": args.tp_tasks,
        "tp_rounds": args.tp_rounds,
        "trickle_tasks": args.trickle_tasks,
        "trickle_rounds": args.trickle_rounds,
        "fleet_sizes": tuple(args.fleet_sizes) if args.fleet_sizes else None,
        "fleet_probes": args.fleet_probes,
        "fleet_helpers": args.fleet_helpers,
    }
    given = {k: v for k, v in overrides.items() if v}
    return args, dataclasses.replace(profile, **given) if given else profile


def main(argv: list[str] | None = None) -> int:
    args, profile = parse(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started = time.monotonic()
    load_before = load_snapshot()
    raise_fd_limit(16384)  # the fleet benchmark's connections; redis-server inherits it
    server = None if args.url else RedisServer().start()
    url = args.url or server.url  # type: ignore[union-attr]
    redis_pid = server.proc.pid if server is not None and server.proc is not None else None
    try:
        server_version = redis.Redis.from_url(url).info("server")["redis_version"]
        results, loads = asyncio.run(
            run(profile, url, args.only, log, args.bulk_concurrency, redis_pid)
        )
    finally:
        Proc.stop_all()
        if server is not None:
            server.cleanup()
    date = dt.date.today().isoformat()
    stem = args.name or (date if profile.name == "full" else f"{date}-{profile.name}")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "date": date,
        "profile": dataclasses.asdict(profile),
        "command": " ".join(["python3 -m benchmarks", *(argv or sys.argv[1:])]),
        "commit": git_commit(),
        "machine": {**machine(), "redis_server": server_version},
        "load_before": load_before,
        "load_after": load_snapshot(),
        "load_per_benchmark": loads,
        "duration_s": round(time.monotonic() - started, 1),
        "results": results,
    }
    json_path = args.out / f"{stem}.json"
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    plotted = "latency" in results and plot(results, args.out / f"{stem}-latency-cdf.png")
    print(table(results))
    m = report["machine"]
    print(
        f"{date}, {m['nproc']} x {m['cpu']} ({m['arch']}), redis {server_version}, "
        f"load before {load_before['loadavg']}, after {report['load_after']['loadavg']}, "
        f"{report['duration_s']} s"
    )
    print(
        "load average (1, 5, 15 min) before → after each: "
        + "; ".join(f"{k} {v['before']} → {v['after']}" for k, v in loads.items())
    )
    print(f"commit {report['commit']}")
    print(f"JSON: {json_path}" + (f"; plot: {stem}-latency-cdf.png" if plotted else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
