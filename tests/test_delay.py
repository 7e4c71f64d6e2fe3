"""A task kicked with a delay longer than ``request_ttl`` stays revocable until it is due.

The kick notes the task's ETA (``{P}:eta:<id>``, only for such kicks), and a request for the
task is kept until the ETA + ``request_ttl``, by each script that sets its life. The end-to-end
proof, on a broker that delays tasks, is ``test_broker_matrix.py::
test_a_delayed_task_aborted_before_its_time_never_runs[rabbitmq]``.
"""

from __future__ import annotations

import logging
import time
import uuid

import pytest
import redis
from taskiq import InMemoryBroker, TaskiqMessage

from taskiq_abort import AbortMiddleware, AbortStatus, abort
from taskiq_abort._wire.keys import KeySpace
from taskiq_abort.backends.memory import MemoryAbortBackend
from taskiq_abort.backends.redis import scripts
from tests.faultkit import client_broker
from tests.support.redis_servers import free_port

pytestmark = pytest.mark.anyio


def _message(delay: object) -> TaskiqMessage:
    return TaskiqMessage(
        task_id=uuid.uuid4().hex, task_name="quick", labels={"delay": delay}, args=[], kwargs={}
    )


async def test_a_long_delay_keeps_the_request_until_the_task_is_due(
    redis_url: str, prefix: str, rclient: redis.Redis
) -> None:
    keys = KeySpace(prefix)
    # A ListQueueBroker ignores the label and nobody listens: the tasks stay queued.
    async with client_broker(redis_url, prefix, "list", request_ttl=2.0) as client:
        late = await client.find_task("quick").kicker().with_labels(delay=30).kiq(1)
        soon = await client.find_task("quick").kicker().with_labels(delay=1.5).kiq(1)
        assert rclient.pttl(keys.eta(late.task_id)) > 31_000  # due in 30 s, + request_ttl
        assert not rclient.exists(keys.eta(soon.task_id))  # within request_ttl: no extra call
        for task in (late, soon):
            assert (await abort(client, task.task_id)).status is AbortStatus.REVOKED
        assert rclient.pttl(keys.request(late.task_id)) > 31_000  # REQUEST, then REVOKE
        assert 0 < rclient.pttl(keys.request(soon.task_id)) <= 2000
        assert (await abort(client, late.task_id)).status is AbortStatus.REVOKED  # again
        assert rclient.pttl(keys.request(late.task_id)) > 31_000


async def test_settle_keeps_a_revoked_request_until_the_task_is_due(
    rclient: redis.Redis, prefix: str
) -> None:
    """SETTLE (Cluster and Sentinel, where replicas >= 1) renews a request's life like REVOKE."""
    keys = KeySpace(prefix)
    request, eta = keys.request("t1"), keys.eta("t1")
    rclient.hset(request, mapping={"at": 1, "outcome": "revoked"})
    rclient.set(eta, 1, px=60_000)
    settle = rclient.register_script(scripts.SETTLE)
    assert settle(keys=[request, eta], args=[1000]) == ["revoked", ""]
    assert rclient.pttl(request) > 59_000
    rclient.delete(eta)
    assert settle(keys=[request, eta], args=[1000]) == ["revoked", ""]
    assert 0 < rclient.pttl(request) <= 1000


@pytest.mark.parametrize("label", [30, "30", 30.0])
async def test_the_memory_backend_keeps_the_request_until_the_task_is_due(label: object) -> None:
    mw = AbortMiddleware(request_ttl=2.0)
    InMemoryBroker().with_middlewares(mw)
    backend = mw.backend
    assert isinstance(backend, MemoryAbortBackend)
    late, soon = _message(label), _message(1)
    for message in (late, soon):
        await mw.pre_send(message)
        await backend.request(message.task_id, None, "test")
    # The expiry times the backend keeps (monotonic clock): no sleeping through them.
    assert backend._requests[late.task_id][0] - time.monotonic() > 31
    assert backend._requests[soon.task_id][0] - time.monotonic() <= 2


@pytest.mark.parametrize("label", ["soon", None, "nan", "inf", -5])
async def test_a_delay_label_that_is_no_long_delay_notes_nothing(label: object) -> None:
    mw = AbortMiddleware(request_ttl=2.0)
    InMemoryBroker().with_middlewares(mw)
    message = _message(label)
    assert await mw.pre_send(message) is message
    assert isinstance(mw.backend, MemoryAbortBackend)
    assert not mw.backend._etas


async def test_a_kick_goes_on_when_the_abort_plane_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mw = AbortMiddleware(f"redis://127.0.0.1:{free_port()}/0", request_ttl=2.0)
    InMemoryBroker().with_middlewares(mw)
    message = _message(60)
    with caplog.at_level(logging.WARNING, logger="taskiq_abort"):
        assert await mw.pre_send(message) is message
    assert f"could not note when delayed task {message.task_id} is due" in caplog.text
    await mw.backend.close()
