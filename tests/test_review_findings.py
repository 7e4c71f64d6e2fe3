"""Findings of the adversarial review of d30b10e..eda8f81 (branch ``review``): each test fails
on the reviewed code and shows one defect."""

from __future__ import annotations

import pytest

from taskiq_abort import AbortStatus, abort
from tests.faultkit import apoll, client_broker, held, own_server, spawn
from tests.test_security import ABORTER_RULES, WORKER_RULES, _setuser

pytestmark = pytest.mark.anyio


async def test_minimal_acl_aborter_can_abort_a_task_that_already_finished(
    redis_url: str, prefix: str
) -> None:
    """docs/acl.md's aborter rights must cover every script an aborter runs. Aborting a task
    whose result is already stored runs SETTLE, which reads the request with HMGET: not in the
    aborter's documented ACL (the reason 0307621 moved REQUEST off HMGET), so ``abort()``
    raises instead of answering ``finished``. Pre-existing (settle.lua is not in the diff)."""
    with own_server() as plane:
        worker_url = _setuser(plane, "abort-worker", WORKER_RULES, prefix)
        aborter_url = _setuser(plane, "abort-client", ABORTER_RULES, prefix)
        env = {"TASKIQ_ABORT_TEST_ABORT_URL": worker_url}
        with spawn(redis_url, prefix, ready=False, env=env):
            async with client_broker(redis_url, prefix, abort_url=aborter_url) as client:
                task = await client.find_task("quick").kiq(1)
                assert (await task.wait_result(timeout=30)).return_value == 2
                await apoll(  # its worker no longer lists it: nobody holds it
                    lambda: _not_held(client, task.task_id), 30, "the finish synced"
                )
                outcome = await abort(client, task.task_id, timeout=5)
                assert outcome.status is AbortStatus.FINISHED


async def _not_held(client, task_id: str) -> bool:  # type: ignore[no-untyped-def]
    return task_id not in await held(client)
