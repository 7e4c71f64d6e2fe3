"""The aborter's half of a rolling-deploy pair: kicks tasks to the worker of the other release,
aborts one running and one queued, and prints what it saw as JSON (one object, on stdout).

Run as ``python rolling_client.py queued`` before the worker starts (the task is revoked while
queued) and ``python rolling_client.py running`` once it runs."""

from __future__ import annotations

import asyncio
import json
import sys

import redis.asyncio as aredis
from rolling_app import PREFIX, URL, broker, sleeper

import taskiq_abort


async def main(step: str) -> dict[str, object]:
    await broker.startup()
    client = aredis.from_url(URL, decode_responses=True)
    try:
        seen: dict[str, object] = {"version": taskiq_abort.__version__}
        if step == "queued":
            queued = await sleeper.kiq("queued")
            seen["queued"] = (await queued.abort(reason="rolling", timeout=5)).status.value
            seen["queued_id"] = queued.task_id
            return seen
        # Labelled: a worker that indexes it writes it into the entry's run token, which the
        # other release must still read as an opaque run id.
        running = await sleeper.kicker().with_labels(tenant="acme").kiq("running")
        popped = await client.blpop([f"{PREFIX}:started"], timeout=30)
        seen["first_started"] = popped[1] if popped else None
        outcome = await running.abort(reason="rolling", timeout=5)
        seen["running"] = outcome.status.value
        result = await running.wait_result(timeout=10)
        seen["running_error"] = type(result.error).__name__ if result.is_err else None
        return seen
    finally:
        await client.aclose()
        await broker.shutdown()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1]))))
