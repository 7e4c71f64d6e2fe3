"""Run every taskiq-abort benchmark against a throwaway redis-server and real workers.

``python3 -m benchmarks`` (full, about 3.5 minutes), ``--quick`` (under a minute). Prints a table,
writes ``benchmarks/results/<date>[-quick].json`` and a latency CDF plot next to it.
See benchmarks/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import redis
import redis.asyncio as aredis
from taskiq import AsyncBroker

from benchmarks.app import events_key, make_broker, now, result_prefix
from taskiq_abort import abort, find_middleware
from taskiq_abort.testing import RedisServer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
_T = TypeVar("_T")
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Profile:
    """How much of everything to run."""

    name: str
    latency_aborts: int  # 1. aborts (and as many pub/sub floor samples, interleaved)
    scale_levels: tuple[int, ...]  # 4. tasks running in one worker
    scale_probes: int  # aborts measured per level
    worker_counts: tuple[int, ...]  # 4. worker processes listening
    worker_probes: int
    bulk: int  # 5. tasks aborted at once (also 6., memory)
    tp_tasks: int  # 2. no-op tasks per throughput run
    tp_rounds: int  # alternating (without, with) pairs per broker
    idle_seconds: float  # 3.
    warmup: int = 5


PROFILES = {
    "full": Profile("full", 1000, (1, 1_000, 10_000), 200, (1, 4, 8), 100, 10_000, 5_000, 7, 10.0),
    "quick": Profile("quick", 40, (1, 500), 20, (1, 2), 10, 500, 500, 1, 2.0),
    "smoke": Profile("smoke", 4, (1, 20), 3, (1, 2), 3, 20, 40, 1, 0.5, warmup=1),
}


# --- statistics --------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile, ``q`` in [0, 100]."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds of samples in seconds."""
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "p50": round(percentile(ms, 50), 4),
        "p90": round(percentile(ms, 90), 4),
        "p99": round(percentile(ms, 99), 4),
        "max": round(max(ms), 4) if ms else float("nan"),
    }


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


# --- processes ---------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def child_pids(pid: int) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    return sorted(int(p) for p in out.split())


class Worker:
    """``taskiq worker benchmarks.app:broker`` in its own process group, killed by PID."""

    started: list[Worker] = []

    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        kind: str = "stream",
        abort: bool = True,
        workers: int = 1,
        max_async: int | None = None,
    ) -> None:
        self.url, self.prefix, self.workers, self.abort = url, prefix, workers, abort
        self.env = {
            **os.environ,
            "BENCH_URL": url,
            "BENCH_PREFIX": prefix,
            "BENCH_BROKER": kind,
            "BENCH_ABORT": "1" if abort else "0",
            "PYTHONPATH": str(ROOT),
        }
        self.args = [
            sys.executable,
            "-m",
            "taskiq",
            "worker",
            "benchmarks.app:broker",
            "--workers",
            str(workers),
            "--log-level",
            "WARNING",
            "--shutdown-timeout",
            "2",
        ]
        if max_async is not None:
            self.args += ["--max-async-tasks", str(max_async)]
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"taskiq-abort-bench-{prefix}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args, env=self.env, cwd=ROOT, stdout=log, stderr=log, start_new_session=True
            )
        Worker.started.append(self)
        return self

    def children(self) -> list[int]:
        assert self.proc is not None
        return child_pids(self.proc.pid)

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"worker exited; log {self.log}:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # stream workers can hang on SIGTERM
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self.proc = None
        with contextlib.suppress(OSError):
            self.log.unlink()

    @classmethod
    def stop_all(cls) -> None:
        for worker in cls.started:
            worker.stop()
        cls.started.clear()


async def poll_until(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, worker: Worker | None = None
) -> None:
    """Poll ``check`` (registry/counter reads: there is no event to block on) until true."""
    deadline = time.monotonic() + timeout
    while not await check():
        if worker is not None:
            worker.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


# --- the benchmark session ---------------------------------------------------------------
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


class Bench:
    """One redis-server, one client process (this one), fresh key prefixes per benchmark."""

    def __init__(self, profile: Profile, url: str, log: Callable[[str], None]) -> None:
        self.p = profile
        self.url = url
        self.log = log
        self.r = aredis.Redis.from_url(url, decode_responses=True)
        self.floor_proc: subprocess.Popen[bytes] | None = None
        self.floor_channel = f"floor-{uuid.uuid4().hex[:8]}"
        self.bulk_concurrency = 64

    # --- floor -------------------------------------------------------------------------
    async def start_floor(self) -> None:
        self.floor_proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.floor", self.url, self.floor_channel],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

        async def subscribed() -> bool:
            counts = await self.r.pubsub_numsub(self.floor_channel)
            return bool(counts and counts[0][1] >= 1)

        await poll_until(subscribed, 30, "the floor subscriber")

    async def stop_floor(self) -> None:
        if self.floor_proc is None:
            return
        await self.r.publish(self.floor_channel, "stop")
        try:
            self.floor_proc.wait(5)
        except subprocess.TimeoutExpired:
            self.floor_proc.kill()
            self.floor_proc.wait(5)
        self.floor_proc = None

    async def floor_once(self) -> float:
        sent = now()
        await self.r.publish(self.floor_channel, repr(sent))
        popped = await self.r.blpop([f"{self.floor_channel}:results"], timeout=10)
        if popped is None:
            raise TimeoutError("the floor subscriber did not answer")
        stamp_sent, arrived = popped[1].split()
        return float(arrived) - float(stamp_sent)

    # --- aborts ------------------------------------------------------------------------
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
            raise TimeoutError(f"task {task.task_id}: no `finally` ({outcome})")
        event, stamp = finished[1].split()
        assert event == "finally", finished
        return float(stamp) - t0, t1 - t0, str(outcome.status.value)

    async def series(self, broker: AsyncBroker, prefix: str, n: int) -> Series:
        """``n`` aborts interleaved with ``n`` floor samples (after a discarded warm-up)."""
        for _ in range(self.p.warmup):
            await self.floor_once()
            await self.abort_once(broker, prefix)
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

    async def wait_registered(self, worker: Worker, count: int) -> list[str]:
        ids: list[str] = []

        async def ready() -> bool:
            nonlocal ids
            now_ms = int((await self.r.time())[0]) * 1000
            ids = await self.r.zrangebyscore(f"{worker.prefix}:workers", now_ms, "+inf")
            return len(ids) >= count

        await poll_until(ready, 60, f"{count} worker(s) to register", worker)
        return ids

    async def kick_many(
        self, broker: AsyncBroker, name: str, n: int, chunk: int = 200, **kwargs: Any
    ) -> list[str]:
        task = broker.find_task(name)
        assert task is not None
        ids: list[str] = []
        for start in range(0, n, chunk):
            handles = await asyncio.gather(
                *(task.kiq(**kwargs) for _ in range(min(chunk, n - start)))
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

    # --- 1. latency ----------------------------------------------------------------------
    async def latency(self) -> dict[str, Any]:
        prefix = f"lat{uuid.uuid4().hex[:6]}"
        worker = Worker(self.url, prefix).start()
        broker = await self.client(prefix)
        try:
            await self.wait_registered(worker, 1)
            series = await self.series(broker, prefix, self.p.latency_aborts)
        finally:
            await broker.shutdown()
            worker.stop()
        out = series.report()
        out["samples_ms"] = {
            "floor": [round(v * 1000, 4) for v in series.floor],
            "to_finally": [round(v * 1000, 4) for v in series.to_finally],
            "to_return": [round(v * 1000, 4) for v in series.to_return],
        }
        return out

    # --- 4. scale (tasks), 5. bulk, 6. memory -------------------------------------------
    async def scale_tasks_bulk_memory(self) -> dict[str, Any]:
        prefix = f"scl{uuid.uuid4().hex[:6]}"
        top = max(self.p.scale_levels)
        worker = Worker(self.url, prefix, max_async=2 * top + 1000).start()
        broker = await self.client(prefix)
        levels: dict[str, Any] = {}
        memory: dict[str, Any] = {}
        bulk: dict[str, Any] = {}
        try:
            (wid,) = await self.wait_registered(worker, 1)
            (child,) = worker.children()
            tasks_key = f"{prefix}:tasks:{wid}"
            background: list[str] = []
            rss_before = 0
            for level in sorted(self.p.scale_levels):
                more = level - 1 - len(background)
                background += await self.kick_many(broker, "hold", more, count=True)
                await self.wait_counter(f"{prefix}:running", len(background), worker, 300)
                await poll_until(
                    lambda n=len(background): self._hlen_at_least(tasks_key, n),
                    60,
                    "registry",
                    worker,
                )
                series = await self.series(broker, prefix, self.p.scale_probes)
                levels[str(level)] = series.report()
                if level == 1:
                    rss_before = rss_bytes(child)
                self.log(f"  scale: {level} running: {levels[str(level)]['to_finally_ms']}")
            # Exactly `bulk` tasks running for memory and the bulk abort.
            more = self.p.bulk - len(background)
            if more > 0:
                background += await self.kick_many(broker, "hold", more, count=True)
                await self.wait_counter(f"{prefix}:running", len(background), worker, 300)
            await poll_until(
                lambda n=len(background): self._hlen_at_least(tasks_key, n), 60, "registry"
            )
            n_running = len(background)
            rss_after = rss_bytes(child)
            redis_tasks = await self._memory_usage(tasks_key)
            redis_worker = await self._memory_usage(f"{prefix}:worker:{wid}")
            memory = {
                "running_tasks": n_running,
                "worker_rss_delta_bytes_per_task": round((rss_after - rss_before) / n_running),
                "redis_registry_bytes_per_task": round(redis_tasks / n_running, 1),
                "redis_registry_total_bytes": redis_tasks,
                "redis_worker_hash_bytes": redis_worker,
            }
            bulk["api"] = await self.bulk_api(broker, prefix, background)
            memory["redis_request_record_bytes"] = await self._memory_usage(
                f"{prefix}:req:{background[0]}"
            )
            bulk["by_name"] = await self.bulk_by_name(broker, prefix, worker, tasks_key)
        finally:
            await broker.shutdown()
            worker.stop()
        memory["baseline"] = await self.memory_baseline()
        base = memory["baseline"]["worker_rss_delta_bytes_per_task"]
        memory["worker_extra_bytes_per_task"] = memory["worker_rss_delta_bytes_per_task"] - base
        return {"levels": levels, "memory": memory, "bulk": bulk}

    async def _hlen_at_least(self, key: str, n: int) -> bool:
        return int(await self.r.hlen(key)) >= n

    async def _memory_usage(self, key: str) -> int:
        return int(await self.r.memory_usage(key, samples=0) or 0)

    async def _bulk_abort(
        self, broker: AsyncBroker, ids: Sequence[str]
    ) -> tuple[dict[str, int], list[str]]:
        """Abort every id, ``bulk_concurrency`` calls in flight; (statuses, ids aborted)."""
        gate = asyncio.Semaphore(self.bulk_concurrency)

        async def one(tid: str) -> str:
            async with gate:
                try:
                    return str((await abort(broker, tid, timeout=120)).status.value)
                except Exception as exc:
                    return type(exc).__name__

        outcomes = await asyncio.gather(*(one(tid) for tid in ids))
        statuses: dict[str, int] = {}
        for o in outcomes:
            statuses[o] = statuses.get(o, 0) + 1
        return statuses, [t for t, o in zip(ids, outcomes, strict=True) if o == "aborted"]

    async def bulk_api(self, broker: AsyncBroker, prefix: str, ids: list[str]) -> dict[str, Any]:
        return await self._timed_bulk(broker, prefix, ids, now(), "bulk via API")

    async def _timed_bulk(
        self,
        broker: AsyncBroker,
        prefix: str,
        ids: list[str],
        t0: float,
        label: str,
        **extra: float,
    ) -> dict[str, Any]:
        """Abort ``ids`` and time it, from ``t0`` until every result is stored."""
        statuses, aborted = await self._bulk_abort(broker, ids)
        t_returned = now()
        await self.wait_results(prefix, aborted)
        t1 = now()
        out = {
            "tasks": len(ids),
            **extra,
            "all_returned_s": round(t_returned - t0, 3),
            "all_stored_s": round(t1 - t0, 3),
            "aborts_per_s": round(len(ids) / (t1 - t0)),
            "statuses": statuses,
            "concurrency": self.bulk_concurrency,
        }
        self.log(f"  {label}: {out}")
        return out

    async def bulk_by_name(
        self, broker: AsyncBroker, prefix: str, worker: Worker, tasks_key: str
    ) -> dict[str, Any]:
        n = self.p.bulk
        await poll_until(lambda: self._hlen_is(tasks_key, 0), 120, "bulk-aborted tasks to end")
        await self.kick_many(broker, "hold_named", n)
        await self.wait_counter(f"{prefix}:running_named", n, worker, 300)
        await poll_until(lambda: self._hlen_at_least(tasks_key, n), 60, "registry")
        backend = find_middleware(broker).backend
        t0 = now()
        listing = await backend.workers()
        ids = [t.task_id for w in listing for t in w.tasks if t.task_name == "hold_named"]
        listed = round(now() - t0, 3)
        return await self._timed_bulk(broker, prefix, ids, t0, "bulk by name", list_s=listed)

    async def _hlen_is(self, key: str, n: int) -> bool:
        return int(await self.r.hlen(key)) == n

    async def memory_baseline(self) -> dict[str, Any]:
        """The same running tasks in a worker without the middleware."""
        prefix = f"mem{uuid.uuid4().hex[:6]}"
        n = self.p.bulk
        worker = Worker(self.url, prefix, abort=False, max_async=2 * n + 1000).start()
        broker = await self.client(prefix, abort=False)
        try:
            await self.kick_many(broker, "hold", 1, count=True)  # warm up: one task running
            await self.wait_counter(f"{prefix}:running", 1, worker, 60)
            (child,) = worker.children()
            before = rss_bytes(child)
            await self.kick_many(broker, "hold", n, count=True)
            await self.wait_counter(f"{prefix}:running", n + 1, worker, 300)
            after = rss_bytes(child)
        finally:
            await broker.shutdown()
            worker.stop()
        return {"running_tasks": n, "worker_rss_delta_bytes_per_task": round((after - before) / n)}

    # --- 4. scale (workers) ------------------------------------------------------------
    async def scale_workers(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for count in self.p.worker_counts:
            prefix = f"wrk{uuid.uuid4().hex[:6]}"
            worker = Worker(self.url, prefix, workers=count).start()
            broker = await self.client(prefix)
            try:
                await self.wait_registered(worker, count)
                out[str(count)] = (await self.series(broker, prefix, self.p.worker_probes)).report()
            finally:
                await broker.shutdown()
                worker.stop()
            self.log(f"  scale: {count} worker(s): {out[str(count)]['to_finally_ms']}")
        return out

    # --- 2. throughput -----------------------------------------------------------------
    async def throughput_run(self, kind: str, with_abort: bool) -> float:
        """Seconds for ``tp_tasks`` no-op tasks, queued first, through one fresh worker."""
        await self.r.flushdb()
        prefix = f"tp{uuid.uuid4().hex[:6]}"
        n = self.p.tp_tasks
        broker = await self.client(prefix, kind, abort=False)
        try:
            ids = await self.kick_many(broker, "noop", n)
        finally:
            await broker.shutdown()
        keys = [f"{result_prefix(prefix)}:{tid}" for tid in ids]
        worker = Worker(self.url, prefix, kind=kind, abort=with_abort).start()
        try:
            # Cheap O(1) poll while it runs; one exact check once enough keys exist.
            async def done() -> bool:
                return int(await self.r.dbsize()) >= n and (await self.r.exists(*keys)) == n

            await poll_until(done, 600, "throughput run", worker)
        finally:
            worker.stop()
        raw = redis.Redis.from_url(self.url)  # results are pickled: read them as bytes
        try:
            stamps = [_return_value(v) for v in raw.mget(keys)]
        finally:
            raw.close()
        return max(stamps) - min(stamps)

    async def throughput(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kind in ("stream", "list"):
            runs: dict[str, list[float]] = {"without": [], "with": []}
            for rnd in range(self.p.tp_rounds):
                order = (False, True) if rnd % 2 == 0 else (True, False)
                for with_abort in order:
                    seconds = await self.throughput_run(kind, with_abort)
                    runs["with" if with_abort else "without"].append(seconds)
            # Each round's two runs are back to back: their ratio is less exposed to other jobs'
            # bursts than the ratio of medians over the whole benchmark.
            paired = [w / wo for w, wo in zip(runs["with"], runs["without"], strict=True)]
            n = self.p.tp_tasks - 1  # tasks between the first stamp and the last
            without, with_ = median(runs["without"]), median(runs["with"])
            out[kind] = {
                "tasks": self.p.tp_tasks,
                "runs_s": {k: [round(v, 3) for v in vs] for k, vs in runs.items()},
                "without_tasks_per_s": round(n / without),
                "with_tasks_per_s": round(n / with_),
                "slowdown_pct": round((with_ / without - 1) * 100, 1),
                "paired_slowdown_pct": round((median(paired) - 1) * 100, 1),
            }
            self.log(f"  throughput {kind}: {out[kind]}")
        return out

    # --- 3. idle CPU -------------------------------------------------------------------
    async def idle(self) -> dict[str, Any]:
        """Both variants idle side by side over the same window."""
        variants = {}
        brokers = []
        try:
            for with_abort in (True, False):
                prefix = f"idle{uuid.uuid4().hex[:6]}"
                worker = Worker(self.url, prefix, abort=with_abort).start()
                broker = await self.client(prefix, abort=False)
                brokers.append(broker)
                variants["with" if with_abort else "without"] = (worker, broker)
            for _worker, broker in variants.values():  # ready = it has run a task
                task = await broker.find_task("noop").kiq()  # type: ignore[union-attr]
                await task.wait_result(check_interval=0.05, timeout=60)
            await asyncio.sleep(1.0)  # let start-up work settle
            pids = {k: w.children() for k, (w, _) in variants.items()}
            before = {k: sum(cpu_seconds(p) for p in ps) for k, ps in pids.items()}
            t0 = time.monotonic()
            await asyncio.sleep(self.p.idle_seconds)
            elapsed = time.monotonic() - t0
            after = {k: sum(cpu_seconds(p) for p in ps) for k, ps in pids.items()}
        finally:
            for broker in brokers:
                await broker.shutdown()
            for worker, _ in variants.values():
                worker.stop()
        pct = {k: round((after[k] - before[k]) / elapsed * 100, 3) for k in before}
        return {
            "seconds": round(elapsed, 2),
            "with_pct_of_core": pct["with"],
            "without_pct_of_core": pct["without"],
            "difference_pct_of_core": round(pct["with"] - pct["without"], 3),
            "clock_tick_s": 1 / _CLK_TCK,
        }

    async def close(self) -> None:
        await self.stop_floor()
        await self.r.aclose()


def _return_value(raw: bytes | None) -> float:
    import pickle  # the result backend's default serializer; our own server's data

    assert raw is not None
    return float(pickle.loads(raw)["return_value"])


# --- machine and report ------------------------------------------------------------------
def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    from importlib.metadata import version

    return {
        "nproc": os.cpu_count(),
        "arch": platform.machine(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": {
            p: version(p) for p in ("taskiq", "taskiq-redis", "redis", "taskiq-abort", "anyio")
        },
    }


def git_commit() -> str:
    """The commit measured (``BENCH_COMMIT`` when run from an exported tree)."""
    if os.environ.get("BENCH_COMMIT"):
        return os.environ["BENCH_COMMIT"]
    out = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "taskiq_abort", "benchmarks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return (out.stdout.strip() or "?") + (" (with uncommitted changes)" if dirty else "")


def load_snapshot() -> dict[str, Any]:
    top = subprocess.run(
        ["ps", "-eo", "pcpu,comm", "--sort=-pcpu", "--no-headers"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.splitlines()[:5]
    return {"loadavg": [round(x, 2) for x in os.getloadavg()], "top": [t.strip() for t in top]}


def fmt_ms(stats: dict[str, float]) -> str:
    return f"{stats['p50']:.3f} / {stats['p99']:.3f}"


def table(results: dict[str, Any]) -> str:
    """The human-readable summary (also pasted into benchmarks/README.md)."""
    lines: list[str] = []
    add = lines.append
    if "latency" in results:
        lat = results["latency"]
        add("### 1. Abort latency, running async task (ms, p50 / p99)")
        add("")
        add("| measure | p50 / p99 | p50 vs floor | target |")
        add("|---|---|---|---|")
        add(
            f"| pub/sub floor (PUBLISH → subscriber in another process) "
            f"| {fmt_ms(lat['floor_ms'])} | 1.00x | |"
        )
        add(
            f"| (a) `abort()` called → task's `finally` runs | {fmt_ms(lat['to_finally_ms'])} "
            f"| {lat['ratio_finally_p50']:.2f}x | p50 ≤ 2x, p99 < 5 ms |"
        )
        add(
            f"| (b) `abort()` called → returns `aborted` | {fmt_ms(lat['to_return_ms'])} "
            f"| {lat['ratio_return_p50']:.2f}x | p50 ≤ 3x |"
        )
        add(f"\n{lat['to_finally_ms']['n']} aborts, statuses {lat['statuses']}.")
        add("")
    if "throughput" in results:
        add("### 2. Throughput: no-op tasks, one worker process, median of alternating runs")
        add("")
        add(
            "| broker | tasks | without (tasks/s) | with AbortMiddleware | slowdown "
            "| median of per-round slowdowns | target |"
        )
        add("|---|---|---|---|---|---|---|")
        for kind, tp in results["throughput"].items():
            add(
                f"| {kind} | {tp['tasks']:,} | {tp['without_tasks_per_s']:,} "
                f"| {tp['with_tasks_per_s']:,} | {tp['slowdown_pct']:+.1f}% "
                f"| {tp.get('paired_slowdown_pct', float('nan')):+.1f}% | ≤ 5% |"
            )
        add("")
    if "idle" in results:
        idle = results["idle"]
        add(f"### 3. Idle worker CPU over {idle['seconds']} s (% of one core, worker children)")
        add("")
        add("| without | with | difference | target |")
        add("|---|---|---|---|")
        add(
            f"| {idle['without_pct_of_core']:.2f}% | {idle['with_pct_of_core']:.2f}% "
            f"| {idle['difference_pct_of_core']:+.2f}% | < 1% |"
        )
        add("")
    if "scale" in results:
        add("### 4. Scale: abort latency (ms, p50 / p99) vs tasks running and worker processes")
        add("")
        add("| setting | floor | (a) to `finally` | (b) to return | (a) p50 vs floor |")
        add("|---|---|---|---|---|")
        for level, rep in results["scale"]["levels"].items():
            add(
                f"| {int(level):,} task(s) running, 1 worker | {fmt_ms(rep['floor_ms'])} "
                f"| {fmt_ms(rep['to_finally_ms'])} | {fmt_ms(rep['to_return_ms'])} "
                f"| {rep['ratio_finally_p50']:.2f}x |"
            )
        for count, rep in results.get("scale_workers", {}).items():
            add(
                f"| {count} worker process(es) | {fmt_ms(rep['floor_ms'])} "
                f"| {fmt_ms(rep['to_finally_ms'])} | {fmt_ms(rep['to_return_ms'])} "
                f"| {rep['ratio_finally_p50']:.2f}x |"
            )
        add("")
        bulk = results["scale"]["bulk"]
        add("### 5. Bulk abort of running tasks in one worker (until every result is stored)")
        add("")
        add(f"{bulk['api']['concurrency']} `abort()` calls in flight at a time.")
        add("")
        add("| how | tasks | all `abort()`s returned | all results stored | aborts/s | statuses |")
        add("|---|---|---|---|---|---|")
        hows = (
            ("api", "`abort()` for each id"),
            ("by_name", "by task name (`backend.workers()` + `abort()`)"),
        )
        for how, label in hows:
            b = bulk.get(how)
            if b:
                add(
                    f"| {label} | {b['tasks']:,} | {b['all_returned_s']:.2f} s "
                    f"| {b['all_stored_s']:.2f} s | {b['aborts_per_s']:,} | {b['statuses']} |"
                )
        add("")
        mem = results["scale"]["memory"]
        add(f"### 6. Memory per running task ({mem['running_tasks']:,} tasks running)")
        add("")
        add("| where | bytes per task |")
        add("|---|---|")
        add(f"| worker RSS, with AbortMiddleware | {mem['worker_rss_delta_bytes_per_task']:,} |")
        add(
            f"| worker RSS, without (baseline) "
            f"| {mem['baseline']['worker_rss_delta_bytes_per_task']:,} |"
        )
        add(f"| worker RSS, the middleware's share | {mem['worker_extra_bytes_per_task']:,} |")
        add(
            f"| Redis, running-task registry (`MEMORY USAGE <prefix>:tasks:<worker>`) "
            f"| {mem['redis_registry_bytes_per_task']:,} |"
        )
        add(
            f"| Redis, one abort request record (`<prefix>:req:<id>`, kept `request_ttl`) "
            f"| {mem['redis_request_record_bytes']:,} |"
        )
        add("")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return False
    samples = results["latency"]["samples_ms"]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for key, label in (
        ("floor", "pub/sub floor: PUBLISH → subscriber (other process)"),
        ("to_finally", "(a) abort() → task's finally runs"),
        ("to_return", "(b) abort() → returns 'aborted'"),
    ):
        xs = sorted(samples[key])
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        ax.step(xs, ys, where="post", label=f"{label} (p50 {percentile(xs, 50):.2f} ms)")
    ax.set_xscale("log")
    ticks = [
        t
        for t in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50)
        if t <= max(max(v) for v in samples.values()) * 2
    ]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of aborts")
    ax.set_title(f"taskiq-abort: abort latency CDF, {len(samples['to_finally'])} aborts")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


STEPS = ("latency", "scale", "workers", "throughput", "idle")


async def run(
    profile: Profile,
    url: str,
    only: Iterable[str],
    log: Callable[[str], None],
    bulk_concurrency: int = 64,
) -> Any:
    bench = Bench(profile, url, log)
    bench.bulk_concurrency = bulk_concurrency
    results: dict[str, Any] = {}
    try:
        await bench.start_floor()
        only = set(only)
        if "latency" in only:
            log("1. abort latency vs pub/sub floor...")
            results["latency"] = await bench.latency()
        if "scale" in only:
            log("4-6. scale with running tasks, bulk abort, memory...")
            results["scale"] = await bench.scale_tasks_bulk_memory()
        if "workers" in only:
            log("4. scale with worker processes...")
            results["scale_workers"] = await bench.scale_workers()
        if "throughput" in only:
            log("2. throughput with and without the middleware...")
            results["throughput"] = await bench.throughput()
        if "idle" in only:
            log("3. idle CPU...")
            results["idle"] = await bench.idle()
    finally:
        await bench.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a tiny run (about a minute)")
    parser.add_argument("--profile", choices=sorted(PROFILES), help="full, quick or smoke")
    parser.add_argument("--only", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for JSON and plot")
    parser.add_argument(
        "--bulk-concurrency",
        type=int,
        default=64,
        help="abort() calls in flight in the bulk benchmark (default 64: a redis-py pool "
        "holds at most 100 connections per client)",
    )
    parser.add_argument("--url", help="use this Redis instead of starting one (not 6379!)")
    parser.add_argument("--tp-tasks", type=int, help="override: tasks per throughput run")
    parser.add_argument("--tp-rounds", type=int, help="override: throughput rounds")
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile or ("quick" if args.quick else "full")]
    if args.tp_tasks or args.tp_rounds:
        profile = dataclasses.replace(
            profile,
            tp_tasks=args.tp_tasks or profile.tp_tasks,
            tp_rounds=args.tp_rounds or profile.tp_rounds,
        )

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started = time.monotonic()
    load_before = load_snapshot()
    server = None if args.url else RedisServer().start()
    url = args.url or server.url  # type: ignore[union-attr]
    try:
        server_version = redis.Redis.from_url(url).info("server")["redis_version"]
        results = asyncio.run(run(profile, url, args.only, log, args.bulk_concurrency))
    finally:
        Worker.stop_all()
        if server is not None:
            server.cleanup()
    date = dt.date.today().isoformat()
    stem = date if profile.name == "full" else f"{date}-{profile.name}"
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "date": date,
        "profile": asdict(profile),
        "command": " ".join(["python3 -m benchmarks", *(argv or sys.argv[1:])]),
        "commit": git_commit(),
        "machine": {**machine(), "redis_server": server_version},
        "load_before": load_before,
        "load_after": load_snapshot(),
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
    print(f"commit {report['commit']}")
    print(f"JSON: {json_path}" + (f"; plot: {stem}-latency-cdf.png" if plotted else ""))
    return 0
