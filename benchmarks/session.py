"""The benchmark session: one Redis, this client process, the pub/sub floor, abort probes.

Every benchmark module gets a :class:`Bench` and uses its helpers: start client brokers, queue
tasks, wait for counters and results, and measure abort latency next to the pub/sub floor.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aredis
from taskiq import AsyncBroker

from benchmarks.app import events_key, make_broker, now, result_prefix
from benchmarks.procs import Proc, Worker, poll_until
from benchmarks.profiles import Profile
from benchmarks.stats import summary_ms
from taskiq_abort._wire.keys import KeySpace


@dataclass
class Series:
    floor: list[float] = field(default_factory=list)
    to_finally: list[float] = field(default_factory=list)
    to_return: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        floor, fin, ret = (summary_ms(x) for x in (self.floor, self.to_finally, self.to_return))
        return {
            "floor_ms": floor,
            "to_finally_ms": fin,
            "to_return_ms": ret,
            "ratio_finally_p50": round(fin["p50"] / floor["p50"], 2),
            "ratio_return_p50": round(ret["p50"] / floor["p50"], 2),
            "statuses": self.statuses,
        }

    def samples_ms(self) -> dict[str, list[float]]:
        return {
            "floor": [round(v * 1000, 4) for v in self.floor],
            "to_finally": [round(v * 1000, 4) for v in self.to_finally],
            "to_return": [round(v * 1000, 4) for v in self.to_return],
        }


class Bench:
    """One redis-server, one client process (this one), fresh key prefixes per benchmark."""

    def __init__(
        self,
        profile: Profile,
        url: str,
        log: Callable[[str], None],
        *,
        redis_pid: int | None = None,
        bulk_concurrency: int = 64,
    ) -> None:
        self.p = profile
        self.url = url
        self.log = log
        self.redis_pid = redis_pid  # None with --url: Redis CPU is then not measured
        self.bulk_concurrency = bulk_concurrency
        self.r = aredis.Redis.from_url(url, decode_responses=True)
        self.floor_channel = f"floor-{uuid.uuid4().hex[:8]}"
        self.floor_proc: Proc | None = None

    # --- the pub/sub floor ---------------------------------------------------------------
    async def start_floor(self) -> None:
        args = [sys.executable, "-m", "benchmarks.floor", self.url, self.floor_channel]
        self.floor_proc = Proc(args, self.floor_channel).start()

        async def subscribed() -> bool:
            counts = await self.r.pubsub_numsub(self.floor_channel)
            return bool(counts and counts[0][1] >= 1)

        await poll_until(subscribed, 30, "the floor subscriber", self.floor_proc)

    async def stop_floor(self) -> None:
        if self.floor_proc is None:
            return
        await self.r.publish(self.floor_channel, "stop")  # it exits by itself, else SIGKILL
        self.floor_proc.stop(sig=0, grace=5)
        self.floor_proc = None

    async def floor_once(self) -> float:
        sent = now()
        await self.r.publish(self.floor_channel, repr(sent))
        popped = await self.r.blpop([f"{self.floor_channel}:results"], timeout=10)
        if popped is None:
            raise TimeoutError("the floor subscriber did not answer")
        stamp_sent, arrived = popped[1].split()
        return float(arrived) - float(stamp_sent)

    # --- aborts --------------------------------------------------------------------------
    async def client(self, prefix: str, kind: str = "stream", abort: bool = True) -> AsyncBroker:
        broker = make_broker(self.url, prefix, kind, abort)
        await broker.startup()
        return broker

    async def abort_once(self, broker: AsyncBroker, prefix: str) -> tuple[float, float, str]:
        """Start a task, wait until it runs, abort it: (to its `finally`, to abort() return)."""
        task = await broker.find_task("hold").kiq(report=True)  # type: ignore[union-attr]
        key = events_key(prefix, task.task_id)
        started = await self.r.blpop([key], timeout=30)
        if started is None:
            raise TimeoutError(f"task {task.task_id} never started")
        t0 = now()
        outcome = await task.abort(timeout=10)  # type: ignore[attr-defined]
        t1 = now()
        finished = await self.r.blpop([key], timeout=30)
        if finished is None:
            raise TimeoutError(f"task {task.task_id}: no `except` ({outcome})")
        event, stamp = finished[1].split()
        assert event == "except", finished
        return float(stamp) - t0, t1 - t0, str(outcome.status.value)

    async def warm_up(self, broker: AsyncBroker, prefix: str) -> None:
        """Discarded samples: connections, subscriptions and scripts are ready afterwards."""
        for _ in range(self.p.warmup):
            await self.floor_once()
            await self.abort_once(broker, prefix)

    async def series(
        self, broker: AsyncBroker, prefix: str, n: int, *, warm_up: bool = True
    ) -> Series:
        """``n`` aborts interleaved with ``n`` floor samples (after a discarded warm-up)."""
        if warm_up:
            await self.warm_up(broker, prefix)
        s = Series()
        for i in range(n):
            # Alternate which goes first, so neither always follows the other's tail.
            if i % 2:
                s.floor.append(await self.floor_once())
            fin, ret, status = await self.abort_once(broker, prefix)
            if not i % 2:
                s.floor.append(await self.floor_once())
            s.to_finally.append(fin)
            s.to_return.append(ret)
            s.statuses[status] = s.statuses.get(status, 0) + 1
        return s

    # --- waiting for workers, tasks and results ------------------------------------------
    async def wait_registered(self, worker: Worker, count: int) -> list[str]:
        ids: list[str] = []

        async def ready() -> bool:
            nonlocal ids
            now_ms = int((await self.r.time())[0]) * 1000
            ids = await self.r.zrangebyscore(KeySpace(worker.prefix).workers, now_ms, "+inf")
            return len(ids) >= count

        await poll_until(ready, 60, f"{count} worker(s) to register", worker)
        return ids

    async def kick_many(
        self,
        broker: AsyncBroker,
        name: str,
        n: int,
        chunk: int = 200,
        labels: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        task = broker.find_task(name)
        assert task is not None
        kicker = task.kicker().with_labels(**(labels or {}))
        ids: list[str] = []
        for start in range(0, n, chunk):
            handles = await asyncio.gather(
                *(kicker.kiq(**kwargs) for _ in range(min(chunk, n - start)))
            )
            ids += [h.task_id for h in handles]
        return ids

    async def wait_counter(self, key: str, target: int, worker: Worker, timeout: float) -> None:
        async def reached() -> bool:
            return int(await self.r.get(key) or 0) >= target

        await poll_until(reached, timeout, f"{key} to reach {target}", worker)

    async def wait_results(self, prefix: str, ids: Sequence[str], timeout: float = 300) -> None:
        keys = [f"{result_prefix(prefix)}:{tid}" for tid in ids]

        async def all_stored() -> bool:
            stored = 0
            for start in range(0, len(keys), 5000):
                stored += int(await self.r.exists(*keys[start : start + 5000]))
            return stored == len(keys)

        await poll_until(all_stored, timeout, f"{len(ids)} results")

    async def hlen_at_least(self, key: str, n: int) -> bool:
        return int(await self.r.hlen(key)) >= n

    async def hlen_is(self, key: str, n: int) -> bool:
        return int(await self.r.hlen(key)) == n

    async def memory_usage(self, key: str) -> int:
        return int(await self.r.memory_usage(key, samples=0) or 0)

    async def close(self) -> None:
        await self.stop_floor()
        await self.r.aclose()
