"""The operator API's label surfaces with real workers (``tests/labels_app.py``, a
ListQueueBroker, two worker processes): ``GET /tasks?label=``, ``POST /tasks/abort-where`` and
``"cascade": true``; the router runs in this process (httpx's ASGI transport)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import redis
from fastapi import Depends, FastAPI
from taskiq import AsyncBroker
from taskiq.task import AsyncTaskiqTask

from taskiq_abort import TaskAbortedError, abort_where
from taskiq_abort.web import abort_router
from tests.conftest import Events, WorkerProcess
from tests.faultkit import started
from tests.labels_app import make_labels_broker
from tests.matrix import wait_event
from tests.test_abort_where_worker import fan_out_running, kick, probe

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(
    list_worker: WorkerProcess, redis_url: str, prefix: str
) -> AsyncIterator[AsyncBroker]:
    async with started(make_labels_broker("list", redis_url, prefix)) as broker:
        yield broker


@pytest.fixture
async def http(client: AsyncBroker) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(abort_router(client, dependencies=[Depends(lambda: None)]))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        yield http


async def test_filter_abort_where_and_cascade(
    client: AsyncBroker, http: httpx.AsyncClient, prefix: str, rclient: redis.Redis,
    events: Events,
) -> None:  # fmt: skip
    await probe(client, events)
    acme = [await kick(client, "gate", "acme") for _ in range(2)]
    zeta = await kick(client, "gate", "zeta")
    for task in (*acme, zeta):
        await wait_event(events, task.task_id, "started")

    page = (await http.get("/tasks", params={"label": "tenant=acme"})).json()
    assert {t["task_id"] for t in page["tasks"]} == {t.task_id for t in acme}
    assert all(t["labels"] == {"tenant": "acme"} and t["parent"] is None for t in page["tasks"])
    assert (await http.get("/tasks", params={"label": "tenant"})).status_code == 422

    body = {"labels": {"tenant": "acme"}, "reason": "gone"}
    assert (
        await http.post("/tasks/abort-where", json={**body, "confirm": False})
    ).status_code == 400
    undeclared = await http.post(
        "/tasks/abort-where", json={"labels": {"user": "7"}, "confirm": True}
    )
    assert undeclared.status_code == 400 and "index_labels" in undeclared.json()["detail"]
    done = await http.post("/tasks/abort-where", json={**body, "confirm": True})
    assert done.status_code == 200, done.text
    answer = done.json()
    assert answer["matched"] == 2 and answer["counts"]["aborted"] == 2
    assert answer["rule"]["labels"] == {"tenant": "acme"}
    assert answer["rule"]["reason"] == f"gone (abort rule {answer['rule']['rule_id']})"
    later = await kick(client, "quick", "acme")
    assert isinstance((await later.wait_result(timeout=30)).error, TaskAbortedError)
    assert events.all(zeta.task_id) == ["started"]
    rclient.rpush(f"{prefix}:release:{zeta.task_id}", 1)

    parent, children = await fan_out_running(client, events, rclient, prefix, 2)
    rows = (await http.get("/tasks", params={"label": f"abort_root={parent.task_id}"})).json()
    assert {t["task_id"] for t in rows["tasks"]} == set(children)
    assert {t["parent"] for t in rows["tasks"]} == {parent.task_id}
    cascaded = await http.post(f"/tasks/{parent.task_id}/abort", json={"cascade": True})
    assert cascaded.status_code == 200, cascaded.text
    assert (cascaded.json()["status"], cascaded.json()["descendants"]) == ("aborted", 2)
    for child in children:
        stopped = await AsyncTaskiqTask(child, client.result_backend).wait_result(timeout=30)
        assert isinstance(stopped.error, TaskAbortedError)


async def test_rules_listed_and_cancelled(redis_url: str, prefix: str) -> None:
    """``GET /rules`` (soonest to expire first), ``POST /rules/{id}/cancel`` (404 once gone,
    422 for an id that cannot be one, 403 on a read-only router)."""
    async with started(make_labels_broker("list", redis_url, prefix)) as broker:
        later = await abort_where(broker, {"tenant": "acme"}, reason="gone", ttl=600)
        sooner = await abort_where(broker, {"tenant": "zeta"}, ttl=60)
        app = FastAPI()
        app.include_router(abort_router(broker, dependencies=[Depends(lambda: None)]))
        app.include_router(
            abort_router(broker, dependencies=[Depends(lambda: None)], read_only=True),
            prefix="/ro",
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            listed = (await http.get("/rules")).json()["rules"]
            assert [r["rule_id"] for r in listed] == [sooner.rule.rule_id, later.rule.rule_id]
            first = (await http.get("/rules", params={"limit": 1})).json()
            assert first["total"] == 2 and [r["rule_id"] for r in first["rules"]] == [
                sooner.rule.rule_id
            ]
            assert listed[1]["labels"] == {"tenant": "acme"} and "gone" in listed[1]["reason"]
            json_body = {"json": {}}
            url = f"/rules/{later.rule.rule_id}/cancel"
            assert (await http.post(f"/ro{url}", **json_body)).status_code == 403
            assert (await http.post(url)).status_code == 415  # state changes take JSON only
            done = await http.post(url, **json_body)
            assert done.status_code == 200, done.text
            assert done.json() == {"rule_id": later.rule.rule_id, "cancelled": True}
            gone = await http.post(url, **json_body)
            assert gone.status_code == 404 and later.rule.rule_id in gone.json()["detail"]
            for bad in ("a%20b", "-abc", "a" * 65, "abc%0A"):
                answer = await http.post(f"/rules/{bad}/cancel", **json_body)
                assert answer.status_code == 422, bad
            left = (await http.get("/rules")).json()["rules"]
            assert [r["rule_id"] for r in left] == [sooner.rule.rule_id]
