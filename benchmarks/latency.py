"""1. Abort latency of a running async task, next to the cancellation floors (``latency``).

Three workers' worth of work, measured interleaved in one run (the order rotates each round),
all with the same ``ListQueueBroker`` + ``RedisAsyncResultBackend``, the same
``taskiq worker --workers 1`` and the same task body (it stamps the clock first thing in its
``except``):

- ours: ``await handle.abort()`` with ``AbortMiddleware``, to the body's ``except`` and to
  ``abort()`` returning ``aborted`` (result stored, confirmed);
- floor (a): ``PUBLISH`` of the task id to a subscriber in the worker that calls
  ``Task.cancel()`` on the task (``benchmarks/cancel_floor.py``), to the body's ``except``;
- floor (b): the same, then the subscriber SETs a result and PUBLISHes a reply, to the caller
  receiving it: the least a confirmed outcome can cost;
- floor (b'): ``Task.cancel()``, then the reply is PUBLISHed once taskiq has stored the task's
  result (``post_save``): the least a confirmed outcome costs when taskiq writes the result;
- floors (a'') and (b''): (a) and (b') with the request recorded before it is published, and
  (b'') with the outcome recorded before the reply, each in one script call
  (``cancel_floor.REQUEST_FLOOR``/``CONFIRM_FLOOR``): what "durable before fast" and a
  recorded outcome cost by themselves, with nothing else of ours;
- and the bare pub/sub floor (``PUBLISH`` → a subscriber in another process), for reference.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aredis
from taskiq import AsyncBroker

from benchmarks.app import events_key, now
from benchmarks.cancel_floor import REQUEST_FLOOR, channel, request_key
from benchmarks.procs import Worker, poll_until
from benchmarks.session import Bench, Series
from benchmarks.stats import fmt_ms, summary_ms


class FloorProbe:
    """The caller's side of floors (a) and (b)."""

    def __init__(self, bench: Bench, broker: AsyncBroker, prefix: str) -> None:
        self.bench, self.broker, self.prefix = bench, broker, prefix
        self.reply_channel = f"{prefix}:reply"
        self.redis = aredis.Redis.from_url(bench.url)
        self.pubsub = self.redis.pubsub()
        self.to_except: list[float] = []
        self.b_to_except: list[float] = []
        self.b_to_reply: list[float] = []
        self.c_to_reply: list[float] = []
        self.c_to_except: list[float] = []
        self.durable_to_except: list[float] = []
        self.d_to_reply: list[float] = []
        self.request = self.redis.register_script(REQUEST_FLOOR)

    async def start(self, worker: Worker) -> None:
        await self.pubsub.subscribe(self.reply_channel)
        while await self.pubsub.get_message(timeout=5) is None:
            pass

        async def subscribed() -> bool:
            counts = await self.bench.r.pubsub_numsub(channel(self.prefix))
            return bool(counts and counts[0][1] >= 1)

        await poll_until(subscribed, 60, "the floor worker's subscriber", worker)

    async def _running(self) -> str:
        task = await self.broker.find_task("hold").kiq(report=True)  # type: ignore[union-attr]
        if await self.bench.r.blpop([events_key(self.prefix, task.task_id)], timeout=30) is None:
            raise TimeoutError(f"floor task {task.task_id} never started")
        return task.task_id

    async def _stamp(self, task_id: str) -> float:
        popped = await self.bench.r.blpop([events_key(self.prefix, task_id)], timeout=30)
        if popped is None:
            raise TimeoutError(f"floor task {task_id}: no `except`")
        return float(popped[1].split()[1])

    async def _send(self, task_id: str, message: str, recorded: bool) -> None:
        """PUBLISH ``message`` to the floor worker; ``recorded``: from ``REQUEST_FLOOR``, which
        records the request first."""
        if recorded:
            key = request_key(self.prefix, task_id)
            await self.request(keys=[key], args=[channel(self.prefix), message])
        else:
            await self.redis.publish(channel(self.prefix), message)

    async def _to_except(self, recorded: bool) -> float:
        task_id = await self._running()
        t0 = now()
        await self._send(task_id, f"a {task_id}", recorded)
        return await self._stamp(task_id) - t0

    async def a(self, record: bool = True) -> None:
        sample = await self._to_except(recorded=False)
        if record:
            self.to_except.append(sample)

    async def a2(self, record: bool = True) -> None:
        """(a''): (a), the request recorded before it is published."""
        sample = await self._to_except(recorded=True)
        if record:
            self.durable_to_except.append(sample)

    async def d(self, record: bool = True) -> None:
        """(b''): (b') with the request and the outcome recorded."""
        t0, t1, _ = await self._confirmed("d")
        if record:
            self.d_to_reply.append(t1 - t0)

    async def b(self, record: bool = True) -> None:
        t0, t1, stamp = await self._confirmed("b")
        if record:
            self.b_to_except.append(stamp - t0)
            self.b_to_reply.append(t1 - t0)

    async def c(self, record: bool = True) -> None:
        t0, t1, stamp = await self._confirmed("c")
        if record:
            self.c_to_except.append(stamp - t0)
            self.c_to_reply.append(t1 - t0)

    async def _confirmed(self, kind: str) -> tuple[float, float, float]:
        task_id = await self._running()
        t0 = now()
        await self._send(task_id, f"{kind} {task_id} {self.reply_channel}", recorded=kind == "d")
        while True:
            msg = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=10)
            if msg is None:
                raise TimeoutError(f"floor task {task_id}: no reply")
            if msg["data"].decode() == task_id:
                break
        t1 = now()
        return t0, t1, await self._stamp(task_id)

    async def close(self) -> None:
        await self.pubsub.aclose()  # type: ignore[no-untyped-call]
        await self.redis.aclose()


async def run(bench: Bench) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    prefix, floor_prefix = f"lat{tag}", f"flr{tag}"
    worker = Worker(bench.url, prefix, kind="list").start()
    floor_worker = Worker(bench.url, floor_prefix, kind="list", abort=False, floor=True).start()
    broker = await bench.client(prefix, "list")
    floor_broker = await bench.client(floor_prefix, "list", abort=False)
    probe = FloorProbe(bench, floor_broker, floor_prefix)
    s = Series()

    async def ours(record: bool = True) -> None:
        fin, ret, status = await bench.abort_once(broker, prefix)
        if record:
            s.to_finally.append(fin)
            s.to_return.append(ret)
            s.statuses[status] = s.statuses.get(status, 0) + 1

    async def pubsub(record: bool = True) -> None:
        sample = await bench.floor_once()
        if record:
            s.floor.append(sample)

    try:
        await bench.wait_registered(worker, 1)
        await probe.start(floor_worker)
        steps: list[Callable[[bool], Awaitable[None]]] = [
            ours, probe.a, probe.a2, probe.b, probe.c, probe.d, pubsub
        ]  # fmt: skip
        for _ in range(bench.p.warmup):
            for step in steps:
                await step(False)
        for i in range(bench.p.latency_aborts):
            k = i % len(steps)  # rotate which goes first, so none always follows another's tail
            for step in steps[k:] + steps[:k]:
                await step(True)
    finally:
        await probe.close()
        await broker.shutdown()
        await floor_broker.shutdown()
        worker.stop()
        floor_worker.stop()
    fa, fb = summary_ms(probe.to_except), summary_ms(probe.b_to_reply)
    fc = summary_ms(probe.c_to_reply)
    fa2, fd = summary_ms(probe.durable_to_except), summary_ms(probe.d_to_reply)
    report = s.report()
    fin, ret = report["to_finally_ms"], report["to_return_ms"]
    return {
        **report,
        "floor_a_ms": fa,
        "floor_b_ms": fb,
        "floor_b_except_ms": summary_ms(probe.b_to_except),
        "floor_b_taskiq_ms": fc,
        "floor_a_durable_ms": fa2,
        "floor_b_durable_ms": fd,
        # From the body's `except` to the caller hearing the outcome, per sample.
        "except_to_reply_ms": {
            "ours": summary_ms([r - f for r, f in zip(s.to_return, s.to_finally, strict=True)]),
            "floor_b_taskiq": summary_ms(
                [r - e for r, e in zip(probe.c_to_reply, probe.c_to_except, strict=True)]
            ),
        },
        "ratio_cancel": {q: round(fin[q] / fa[q], 2) for q in ("p50", "p99")},
        "ratio_confirm": {q: round(ret[q] / fb[q], 2) for q in ("p50", "p99")},
        "ratio_confirm_taskiq": {q: round(ret[q] / fc[q], 2) for q in ("p50", "p99")},
        "ratio_cancel_durable": {q: round(fin[q] / fa2[q], 2) for q in ("p50", "p99")},
        "ratio_confirm_durable": {q: round(ret[q] / fd[q], 2) for q in ("p50", "p99")},
        # What the floors themselves say: the least the guarantees cost, against (a) and (b).
        "durable_over_floor": {
            "a2_over_a": {q: round(fa2[q] / fa[q], 2) for q in ("p50", "p99")},
            "b2_over_b": {q: round(fd[q] / fb[q], 2) for q in ("p50", "p99")},
        },
        "samples_ms": {
            **s.samples_ms(),
            "floor_a": [round(v * 1000, 4) for v in probe.to_except],
            "floor_b": [round(v * 1000, 4) for v in probe.b_to_reply],
            "floor_b_taskiq": [round(v * 1000, 4) for v in probe.c_to_reply],
            "floor_a_durable": [round(v * 1000, 4) for v in probe.durable_to_except],
            "floor_b_durable": [round(v * 1000, 4) for v in probe.d_to_reply],
        },
    }


def table(results: dict[str, Any]) -> list[str]:
    if "latency" not in results:
        return []
    lat = results["latency"]
    rc, rf, rt = lat["ratio_cancel"], lat["ratio_confirm"], lat["ratio_confirm_taskiq"]
    rows = []
    if "floor_a_durable_ms" in lat:  # results written before the durable floors lack them
        da, db = lat["ratio_cancel_durable"], lat["ratio_confirm_durable"]
        fl = lat["durable_over_floor"]
        rows = [
            f"| floor (a''): (a), its PUBLISH from a script that first records the request "
            f"| {fmt_ms(lat['floor_a_durable_ms'])} | {fl['a2_over_a']['p50']:.2f}x / "
            f"{fl['a2_over_a']['p99']:.2f}x (a); ours {da['p50']:.2f}x / {da['p99']:.2f}x | |",
            f"| floor (b''): (b'), request and outcome each recorded before they are published "
            f"| {fmt_ms(lat['floor_b_durable_ms'])} | {fl['b2_over_b']['p50']:.2f}x / "
            f"{fl['b2_over_b']['p99']:.2f}x (b); ours {db['p50']:.2f}x / {db['p99']:.2f}x | |",
        ]
    return [
        "### 1. Abort latency, running async task (ms, p50 / p99)",
        "",
        "| measure | p50 / p99 | ours ÷ floor, p50 / p99 | target |",
        "|---|---|---|---|",
        f"| floor (a): PUBLISH → `Task.cancel()` in the worker → body's `except` "
        f"| {fmt_ms(lat['floor_a_ms'])} | | |",
        f"| ours: `abort()` called → body's `except` | {fmt_ms(lat['to_finally_ms'])} "
        f"| {rc['p50']:.2f}x / {rc['p99']:.2f}x (a) | ≤ 1.2x / ≤ 1.5x |",
        f"| floor (b): the same, then SET result + PUBLISH reply → caller has it "
        f"| {fmt_ms(lat['floor_b_ms'])} | | |",
        f"| ours: `abort()` called → returns `aborted` | {fmt_ms(lat['to_return_ms'])} "
        f"| {rf['p50']:.2f}x / {rf['p99']:.2f}x (b); {rt['p50']:.2f}x / {rt['p99']:.2f}x (b') "
        "| ≤ 1.3x (b) at p50 |",
        f"| floor (b'): `Task.cancel()`, PUBLISH reply once taskiq stored the result "
        f"| {fmt_ms(lat['floor_b_taskiq_ms'])} | | |",
        *rows,
        f"| pub/sub alone: PUBLISH → subscriber in another process "
        f"| {fmt_ms(lat['floor_ms'])} | | |",
        f"\n{lat['to_finally_ms']['n']} aborts and as many samples of each floor, interleaved; "
        f"statuses {lat['statuses']}.",
        "",
    ]
