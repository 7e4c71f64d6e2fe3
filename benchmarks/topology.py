"""Abort latency on one Redis, a Redis Cluster and Sentinel, side by side in one run.

    python3 -m benchmarks.topology [--n 200] [--out FILE]

Starts a standalone redis-server, a Cluster (3 masters + 3 replicas) and a Sentinel set-up
(1 master + 1 replica + 3 sentinels), all throwaway on loopback ports, and one real
``taskiq worker tests.app:broker`` per topology (a taskiq-redis list broker of that topology,
``AbortMiddleware`` with its defaults: ``replicas=1`` on Cluster and Sentinel). The rounds
alternate between the topologies, so that the machine's noise falls on all three alike. Each
round starts a task, waits until it runs, then aborts it and records (a) ``abort()`` called →
the task's ``finally`` ran (its timestamp, reported to a separate Redis) and (b) ``abort()``
called → it returned ``aborted``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import redis
from taskiq import AsyncBroker

from benchmarks.report import loadavg
from benchmarks.stats import fmt_ms, summary_ms
from tests.support.redis_servers import ClusterServers, RedisServer, SentinelServers

KINDS = ("standalone", "cluster", "sentinel")


@contextlib.contextmanager
def deployments() -> Iterator[dict[str, Any]]:
    """The three deployments (and the standalone Redis the tasks report their events to)."""
    events = RedisServer().start()
    standalone = RedisServer().start()
    cluster = ClusterServers()
    sentinel = SentinelServers()
    try:
        cluster.start()
        sentinel.start()
        node = cluster.nodes[0]
        hosts = ",".join(f"{h}:{p}" for h, p in sentinel.addresses)
        yield {
            "events": events.url,
            "standalone": standalone.url,
            "cluster": f"cluster://127.0.0.1:{node.port}",
            "sentinel": f"sentinel://{hosts}/{sentinel.master_name}",
        }
    finally:
        sentinel.cleanup()
        cluster.cleanup()
        standalone.cleanup()
        events.cleanup()


class Target:
    """One topology: its worker process and a client broker."""

    def __init__(self, kind: str, url: str, events_url: str) -> None:
        from tests.conftest import WorkerProcess

        self.kind, self.url = kind, url
        self.prefix = f"topo{uuid.uuid4().hex[:6]}"
        os.environ["TASKIQ_ABORT_TEST_PREFIX"] = self.prefix  # read by tests.app's emit()
        self.worker = WorkerProcess(
            url, self.prefix, broker="list", env={"TASKIQ_ABORT_TEST_EVENTS_URL": events_url}
        )
        self.broker: AsyncBroker | None = None
        self.finally_s: list[float] = []
        self.return_s: list[float] = []
        self.statuses: dict[str, int] = {}

    async def start(self) -> None:
        from tests.app import make_broker

        self.worker.start()
        self.broker = make_broker(self.url, self.prefix, "list")
        await self.broker.startup()

    async def once(self, events: redis.Redis, record: bool) -> None:
        from tests.app import events_key

        assert self.broker is not None
        task = await self.broker.find_task("sleeper").kiq(60)
        key = events_key(self.prefix, task.task_id)
        started = await asyncio.to_thread(events.blpop, [key], 30)
        assert started is not None, f"{self.kind}: task {task.task_id} never started"
        t0 = time.time()
        outcome = await task.abort(timeout=10)  # type: ignore[attr-defined]
        t1 = time.time()
        finished = await asyncio.to_thread(events.blpop, [key], 30)
        assert finished is not None, f"{self.kind}: no `finally` ({outcome})"
        event, stamp = finished[1].decode().rsplit(" ", 1)
        assert event == "finally", finished
        if record:
            self.finally_s.append(float(stamp) - t0)
            self.return_s.append(t1 - t0)
            status = outcome.status.value
            self.statuses[status] = self.statuses.get(status, 0) + 1

    async def stop(self) -> None:
        if self.broker is not None:
            await self.broker.shutdown()
        self.worker.stop()

    def report(self) -> dict[str, Any]:
        return {
            "to_finally_ms": summary_ms(self.finally_s),
            "to_return_ms": summary_ms(self.return_s),
            "statuses": self.statuses,
        }


async def measure(urls: dict[str, Any], n: int, warmup: int = 20) -> dict[str, Any]:
    events = redis.Redis.from_url(urls["events"], socket_timeout=None)  # BLPOP waits 30 s
    targets = [Target(kind, urls[kind], urls["events"]) for kind in KINDS]
    try:
        for target in targets:
            await target.start()
        for i in range(warmup + n):
            for target in targets if i % 2 else reversed(targets):
                await target.once(events, record=i >= warmup)
        return {t.kind: t.report() for t in targets}
    finally:
        for target in targets:
            await target.stop()
        events.close()


def table(results: dict[str, Any]) -> list[str]:
    base = results["standalone"]["to_finally_ms"]["p50"]
    lines = [
        "| topology | (a) `abort()` → `finally` p50 / p99 (ms) | vs one Redis | "
        "(b) `abort()` returns `aborted` p50 / p99 (ms) | statuses |",
        "|---|---|---|---|---|",
    ]
    for kind in KINDS:
        r = results[kind]
        lines.append(
            f"| {kind} | {fmt_ms(r['to_finally_ms'])} | "
            f"{r['to_finally_ms']['p50'] / base:.2f}x | {fmt_ms(r['to_return_ms'])} | "
            f"{r['statuses']} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="aborts per topology")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()
    before = loadavg()
    with deployments() as urls:
        results = asyncio.run(measure(urls, args.n))
    results["load"] = {"before": before, "after": loadavg()}
    print("\n".join(table(results)))
    print(f"\nload average before / after: {before} / {results['load']['after']}")
    if args.out:
        with open(args.out, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
