"""Findings of the adversarial review of d30b10e..eda8f81 (branch ``review``): each test fails
on the reviewed code and shows one defect."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from taskiq_abort import AbortStatus, abort
from taskiq_abort.backends.base import AbortBackend
from taskiq_abort.backends.memory import MemoryAbortBackend
from taskiq_abort.backends.redis import RedisAbortBackend
from taskiq_abort.outcome import AbortRule
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


@pytest.fixture(params=["redis", "memory"])
async def backend(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[AbortBackend]:
    backend: AbortBackend = MemoryAbortBackend()
    if request.param == "redis":
        backend = RedisAbortBackend(request.getfixturevalue("redis_url"), prefix=prefix)
    yield backend
    await backend.close()


async def test_add_rules_records_each_rules_requested_by(backend: AbortBackend) -> None:
    """``add_rules`` returns each rule with its own ``requested_by``, and the in-memory backend
    stores it so; Redis stores the first rule's ``by`` for every rule of the call
    (rules.py: ``chunk[0].requested_by``), so what it returns is not what it recorded, and the
    two backends disagree. Nothing enforces the docstring's "one aborter's"."""
    wanted = [
        AbortRule("r1", {"tenant": "a"}, None, "gone (abort rule r1)", 0.0, 0.0, "alice:1"),
        AbortRule("r2", {"tenant": "b"}, None, "gone (abort rule r2)", 0.0, 0.0, "bob:2"),
    ]
    added = await backend.add_rules(wanted, 60)
    stored = {r.rule_id: r.requested_by for r in await backend.rules()}
    assert stored == {r.rule_id: r.requested_by for r in added} == {"r1": "alice:1", "r2": "bob:2"}
