"""The ceiling of one shard: every key of a prefix lives in one Redis Cluster slot, so one
master serves all of that prefix's abort requests and task starts. How many per second can it
take?

Two numbers each: what one client process reached (bound by Python on a busy machine), and the
server's ceiling from its own CPU per call (``INFO commandstats``, EVALSHA's ``usec_per_call``):
``1e6 / usec_per_call`` calls per second on one core of the master.

    python3 -m benchmarks.shard [--cluster] [--n 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from taskiq_abort._wire.keys import KeySpace
from taskiq_abort.backends.redis import RedisAbortBackend
from taskiq_abort.outcome import RunningEntry
from tests.support.redis_servers import ClusterServers, RedisServer

PREFIX = "shard"


def _evalsha_usec(node: RedisServer) -> float:
    with node.client() as client:
        stats: dict[str, Any] = client.info("commandstats")
        return float(stats.get("cmdstat_evalsha", {}).get("usec_per_call", 0.0))


def _reset(node: RedisServer) -> None:
    with node.client() as client:
        client.config_resetstat()


async def _requests(backend: RedisAbortBackend, n: int, concurrency: int, held: bool) -> float:
    """``n`` abort requests (of queued ids, or of ids a registered worker holds); calls/s."""
    if held:
        entries = [RunningEntry(f"held-{i}", "bench", f"r{i}", time.time()) for i in range(n)]
        for i in range(0, n, 500):
            await backend.sync("bench-worker", entries[i : i + 500], [])
    ids = iter(range(n))

    async def one_client() -> None:
        for i in ids:
            await backend.request(f"{'held' if held else 'queued'}-{i}", None, "bench")

    started = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return n / (time.perf_counter() - started)


async def _starts(backend: RedisAbortBackend, n: int, batch: int) -> float:
    """``n`` task starts registered ``batch`` at a time (the worker batches what arrives in
    the same moment); starts/s."""
    started = time.perf_counter()
    for i in range(0, n, batch):
        entries = [RunningEntry(f"s{i + j}", "bench", f"r{i + j}", 0.0) for j in range(batch)]
        await backend.sync("bench-starter", entries, [])
    return n / (time.perf_counter() - started)


async def measure(url: str, owner: RedisServer, cluster: bool, n: int) -> dict[str, Any]:
    backend = RedisAbortBackend(url, cluster=cluster, prefix=PREFIX)
    out: dict[str, Any] = {"replicas_waited": backend.replicas}
    await backend.register("bench-worker", {"host": "bench", "pid": "0", "started": "0"}, [])
    await backend.register("bench-starter", {"host": "bench", "pid": "0", "started": "0"}, [])
    for held in (False, True):
        _reset(owner)
        rate = await _requests(backend, n, 32, held)
        usec = _evalsha_usec(owner)
        out[f"requests_{'held' if held else 'queued'}"] = {
            "client_per_s": round(rate),
            "server_usec_per_call": usec,
            "server_ceiling_per_s": round(1e6 / usec) if usec else None,
        }
    for batch in (1, 16):
        _reset(owner)
        rate = await _starts(backend, n, batch)
        usec = _evalsha_usec(owner)
        out[f"starts_batch_{batch}"] = {
            "client_per_s": round(rate),
            "server_usec_per_call": usec,
            "server_ceiling_per_s": round(batch * 1e6 / usec) if usec else None,
        }
    await backend.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.shard")
    parser.add_argument("--cluster", action="store_true", help="on a 3+3 Redis Cluster")
    parser.add_argument("--n", type=int, default=20000, help="calls per measurement")
    args = parser.parse_args(argv)
    deployment: ClusterServers | RedisServer
    if args.cluster:
        deployment = ClusterServers().start()
        owner, url = deployment.owner(KeySpace(PREFIX).tag), deployment.url
    else:
        deployment = owner = RedisServer().start()
        url = owner.url
    try:
        result = asyncio.run(measure(url, owner, args.cluster, args.n))
    finally:
        deployment.cleanup()
    with open("/proc/loadavg") as load:
        result["loadavg"] = load.read().split()[:3]
    result["topology"] = "cluster" if args.cluster else "standalone"
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
