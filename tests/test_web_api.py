"""The operator API as users drive it: a real uvicorn server (``taskiq-abort web``), a real
``taskiq worker`` and the suite's Redis, over HTTP with httpx. Every endpoint, every error code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis
from fastapi import Depends
from taskiq import AsyncBroker, InMemoryBroker
from taskiq.task import AsyncTaskiqTask

from taskiq_abort import AbortConfigError, AbortMiddleware, TaskAbortedError
from taskiq_abort.web import abort_router
from taskiq_abort.web.server import create_app
from tests.app import make_broker
from tests.conftest import ROOT, Events, WorkerProcess
from tests.support.redis_servers import RedisServer, free_port
from tests.web_server import WebServer, new_prefix, web_worker

pytestmark = pytest.mark.anyio
TOKEN = "test-token-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def web_prefix() -> str:
    return new_prefix()


@pytest.fixture(scope="module")
def worker(redis_server: RedisServer, web_prefix: str) -> Iterator[WorkerProcess]:
    proc = web_worker(redis_server.url, web_prefix).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def server(redis_server: RedisServer, web_prefix: str) -> Iterator[WebServer]:
    with WebServer(redis_server.url, web_prefix, token=TOKEN) as web:
        yield web


@pytest.fixture
async def http(server: WebServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base, headers=server.headers, timeout=30) as c:
        yield c


@pytest.fixture
async def kicker(redis_server: RedisServer, web_prefix: str) -> AsyncIterator[AsyncBroker]:
    broker = make_broker(redis_server.url, web_prefix)
    await broker.startup()
    yield broker
    await broker.shutdown()


@pytest.fixture
def web_events(redis_server: RedisServer, web_prefix: str) -> Iterator[Events]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield Events(client, web_prefix)
    client.close()


async def running(kicker: AsyncBroker, events: Events, name: str = "sleeper") -> str:
    args: tuple[Any, ...] = (60,) if name == "sleeper" else ()
    task = await kicker.find_task(name).kiq(*args)  # type: ignore[union-attr]
    events.wait(task.task_id, "started")
    return str(task.task_id)


def keys_mentioning(redis_url: str, text: str) -> list[str]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return [key for key in client.scan_iter(count=1000) if text in key]
    finally:
        client.close()


# --- the dashboard and authentication --------------------------------------------------
async def test_dashboard_is_served_with_its_own_assets(http: httpx.AsyncClient) -> None:
    page = await http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert 'data-read-only="false"' in page.text
    for name, kind in (("dashboard.js", "javascript"), ("dashboard.css", "css")):
        asset = await http.get(f"/static/{name}")
        assert asset.status_code == 200 and kind in asset.headers["content-type"]
        assert not re.search(r"https?://", asset.text), f"{name} reaches out to the internet"
        assert "innerHTML" not in asset.text
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text)
    assert (await http.get("/static/../router.py")).status_code == 404
    assert (await http.get("/static/secrets.txt")).status_code == 404


async def test_token_is_required_and_the_login_form_sets_a_cookie(server: WebServer) -> None:
    async with httpx.AsyncClient(base_url=server.base, timeout=30) as anonymous:
        for path in ("/tasks", "/workers", "/outcomes", "/tasks/abc"):
            assert (await anonymous.get(path)).status_code == 401, path
        denied = await anonymous.post("/tasks/abc/abort", json={})
        assert denied.status_code == 401
        bad = await anonymous.get("/tasks", headers={"Authorization": "Bearer wrong"})
        assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer"

        to_login = await anonymous.get("/")  # a browser is sent to the form
        assert to_login.status_code == 303 and to_login.headers["location"] == "/login"
        form = await anonymous.get("/login")
        assert form.status_code == 200 and 'method="post"' in form.text
        assert "form-action 'self'" in form.headers["content-security-policy"]
        assert (await anonymous.post("/login", data={"token": "wrong"})).status_code == 401
        in_address = await anonymous.get(f"/?token={TOKEN}")  # refused: logs would keep it
        assert in_address.status_code == 400 and "/login" in in_address.text
        assert (await anonymous.get("/tasks")).status_code == 401

        login = await anonymous.post("/login", data={"token": TOKEN})
        assert login.status_code == 303 and login.headers["location"] == "/"
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert (await anonymous.get("/tasks")).status_code == 200  # the cookie now
        assert (await anonymous.get("/")).status_code == 200

    access_log = "".join(server.lines)
    assert "GET /tasks" in access_log  # the access log is on, and holds no token
    assert TOKEN not in access_log
    assert "token=***" in access_log


# --- listing, looking up, aborting -------------------------------------------------------
async def test_list_look_up_and_abort_a_running_task(
    http: httpx.AsyncClient, kicker: AsyncBroker, web_events: Events, worker: WorkerProcess
) -> None:
    task_id = await running(kicker, web_events)
    (worker_id,) = worker.live_workers()

    page = (await http.get("/tasks", params={"name": "sleeper"})).json()
    row = next(t for t in page["tasks"] if t["task_id"] == task_id)
    assert row["task_name"] == "sleeper" and row["worker"] == worker_id
    assert row["pid"] > 0 and row["host"] and row["started"] > 0
    assert row["abort_requested"] is False
    assert page["total"] >= 1 and page["offset"] == 0 and page["limit"] == 100
    other_name = (await http.get("/tasks", params={"name": "quick"})).json()
    assert task_id not in {t["task_id"] for t in other_name["tasks"]}
    by_worker = (await http.get("/tasks", params={"worker": worker_id[:8]})).json()
    assert task_id in {t["task_id"] for t in by_worker["tasks"]}
    nobody = (await http.get("/tasks", params={"worker": "no-such-worker"})).json()
    assert nobody == {"tasks": [], "total": 0, "offset": 0, "limit": 100}

    state = (await http.get(f"/tasks/{task_id}")).json()
    assert state["state"] == "running" and state["running"]["worker"] == worker_id
    assert state["has_result"] is False and state["abort_request"] is None
    workers = (await http.get("/workers")).json()
    me = next(w for w in workers["workers"] if w["worker_id"] == worker_id)
    assert me["running"] >= 1 and me["pid"] > 0 and workers["running"] >= 1

    answer = await http.post(
        f"/tasks/{task_id}/abort", json={"reason": "from the API", "wait": True, "timeout": 10}
    )
    assert answer.status_code == 200, answer.text
    outcome = answer.json()
    assert outcome["task_id"] == task_id and outcome["status"] == "aborted"
    assert outcome["worker"] == worker_id and outcome["reason"] == "from the API"
    assert set(outcome) == {
        "task_id", "status", "worker", "reason", "elapsed_ms", "forced", "descendants"
    }  # fmt: skip
    assert outcome["forced"] is False
    web_events.wait(task_id, "finally")
    result = await AsyncTaskiqTask(task_id, kicker.result_backend).wait_result(timeout=10)
    assert isinstance(result.error, TaskAbortedError)
    assert result.error.reason == "from the API"

    after = (await http.get(f"/tasks/{task_id}")).json()
    assert after["state"] == "aborted" and after["running"] is None
    assert after["abort_request"]["reason"] == "from the API"
    assert after["abort_request"]["worker"] == worker_id and after["has_result"] is True
    recent = (await http.get("/outcomes")).json()["outcomes"]
    assert recent[0]["task_id"] == task_id and recent[0]["status"] == "aborted"
    assert recent[0]["at"] > 0


async def test_unknown_and_queued_ids(http: httpx.AsyncClient) -> None:
    never_sent = uuid.uuid4().hex
    unknown = (await http.get(f"/tasks/{never_sent}")).json()
    assert unknown["state"] == "unknown" and unknown["has_result"] is False
    outcome = (await http.post(f"/tasks/{never_sent}/abort", json={})).json()
    assert outcome["status"] == "revoked"
    assert (await http.get(f"/tasks/{never_sent}")).json()["state"] == "revoked"
    # "abort" is a fine task id for GET; for POST the bulk endpoint owns /tasks/abort
    assert (await http.get("/tasks/abort")).json()["state"] == "unknown"


async def test_paging(
    http: httpx.AsyncClient, kicker: AsyncBroker, web_events: Events, worker: WorkerProcess
) -> None:
    ids = {await running(kicker, web_events) for _ in range(3)}
    total = (await http.get("/tasks", params={"limit": 1})).json()["total"]
    seen = []
    for offset in range(total):
        page = (await http.get("/tasks", params={"limit": 1, "offset": offset})).json()
        seen += [t["task_id"] for t in page["tasks"]]
    assert ids <= set(seen) and len(seen) == len(set(seen))
    out_of_range = (await http.get("/tasks", params={"offset": total + 5})).json()
    assert out_of_range["tasks"] == [] and out_of_range["total"] == total
    for bad in ({"limit": 0}, {"limit": 10_001}, {"offset": -1}, {"limit": "x"}):
        assert (await http.get("/tasks", params=bad)).status_code == 422, bad
    for task_id in ids:  # leave nothing running for the next tests
        await http.post(f"/tasks/{task_id}/abort", json={})


async def test_invalid_ids_are_422_and_nothing_is_sent(
    http: httpx.AsyncClient, redis_server: RedisServer
) -> None:
    too_long = "a" * 300
    for task_id in (too_long, "bad%01id", "tab%09id"):
        posted = await http.post(f"/tasks/{task_id}/abort", json={"reason": "no"})
        assert posted.status_code == 422, (task_id, posted.text)
        assert (await http.get(f"/tasks/{task_id}")).status_code == 422
    assert keys_mentioning(redis_server.url, too_long) == []
    assert keys_mentioning(redis_server.url, "bad\x01id") == []


async def test_bodies_are_validated(http: httpx.AsyncClient) -> None:
    task_id = uuid.uuid4().hex
    for body in (
        {"reason": "x" * 1025},  # reasons are length-limited
        {"timeout": -1},
        {"timeout": 61},
        {"wait": "maybe"},
        {"unknown": 1},
        ["not", "an", "object"],
    ):
        answer = await http.post(f"/tasks/{task_id}/abort", json=body)
        assert answer.status_code == 422, (body, answer.text)
    broken = await http.post(
        f"/tasks/{task_id}/abort",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert broken.status_code == 422
    lone_surrogate = await http.post(
        f"/tasks/{task_id}/abort",
        content=b'{"reason": "\\ud800"}',
        headers={"Content-Type": "application/json"},
    )
    assert lone_surrogate.status_code == 422
    assert (await http.get(f"/tasks/{task_id}")).json()["state"] == "unknown"  # nothing sent


async def test_only_json_can_change_state(
    http: httpx.AsyncClient, kicker: AsyncBroker, web_events: Events, worker: WorkerProcess
) -> None:
    """What a cross-site HTML form can send (urlencoded, multipart, text/plain) is refused."""
    task_id = await running(kicker, web_events)
    attempts: list[dict[str, Any]] = [
        {"data": {"reason": "csrf"}},
        {"files": {"reason": ("r.txt", b"csrf")}},
        {"content": b'{"reason": "csrf"}', "headers": {"Content-Type": "text/plain"}},
        {},
    ]
    for kwargs in attempts:
        answer = await http.post(f"/tasks/{task_id}/abort", **kwargs)
        assert answer.status_code == 415, (kwargs, answer.text)
        bulk = await http.post("/tasks/abort", **kwargs)
        assert bulk.status_code == 415
    state = (await http.get(f"/tasks/{task_id}")).json()
    assert state["state"] == "running" and state["abort_request"] is None
    await http.post(f"/tasks/{task_id}/abort", json={})


async def test_bulk_abort_by_name(
    http: httpx.AsyncClient, kicker: AsyncBroker, web_events: Events, worker: WorkerProcess
) -> None:
    ids = {await running(kicker, web_events, "swallower") for _ in range(3)}
    body = {"task_name": "swallower", "reason": "bulk"}
    unconfirmed = await http.post("/tasks/abort", json={**body, "confirm": False})
    assert unconfirmed.status_code == 400 and "confirm" in unconfirmed.json()["detail"]
    assert (await http.post("/tasks/abort", json=body)).status_code == 422  # confirm missing
    assert (await http.post("/tasks/abort", json={**body, "task_name": ""})).status_code == 422
    assert (await http.get("/tasks", params={"name": "swallower"})).json()["total"] == 3

    answer = await http.post("/tasks/abort", json={**body, "confirm": True})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["task_name"] == "swallower" and result["matched"] == 3
    assert result["counts"] == {
        "aborted": 3, "revoked": 0, "finished": 0, "unconfirmed": 0, "failed": 0
    }  # fmt: skip
    assert {o["task_id"] for o in result["outcomes"]} == ids
    for task_id in ids:
        stored = await AsyncTaskiqTask(task_id, kicker.result_backend).wait_result(timeout=10)
        assert isinstance(stored.error, TaskAbortedError) and stored.error.reason == "bulk"
    none_left = (await http.post("/tasks/abort", json={**body, "confirm": True})).json()
    assert none_left["matched"] == 0 and none_left["outcomes"] == []


async def test_openapi_schema_has_the_response_models(http: httpx.AsyncClient) -> None:
    schema = (await http.get("/openapi.json")).json()
    assert set(schema["paths"]) == {
        "/tasks", "/tasks/{task_id}", "/tasks/abort", "/tasks/{task_id}/abort",
        "/tasks/abort-where", "/rules", "/rules/{rule_id}/cancel", "/workers", "/outcomes",
    }  # fmt: skip
    models = set(schema["components"]["schemas"])
    assert {"TaskPage", "RunningTask", "TaskState", "Outcome", "BulkAbortResult"} <= models
    assert {"Worker", "WorkerList", "AbortBody", "BulkAbortBody", "Problem"} <= models
    assert {"RuleList", "RuleCancelled"} <= models
    cancel = schema["paths"]["/rules/{rule_id}/cancel"]["post"]["responses"]
    assert {"200", "403", "404", "415", "422", "503"} <= set(cancel)
    abort = schema["paths"]["/tasks/{task_id}/abort"]["post"]
    assert {"200", "403", "415", "422", "503"} <= set(abort["responses"])
    assert "400" not in abort["responses"]  # a body that is not JSON is FastAPI's 422
    bulk = schema["paths"]["/tasks/abort"]["post"]["responses"]
    assert bulk["400"]["description"] == '"confirm" is false'
    assert (await http.get("/docs")).status_code == 404  # Swagger UI would load a CDN
    # docs/web.md's table of error codes says the same
    table = (ROOT / "docs" / "web.md").read_text().split('Errors (`{"detail": ...}`)')[1]
    assert '| 400 | a bulk abort with `"confirm": false` |' in table
    assert "a body that is not valid JSON; a bulk abort without `confirm`" in table


# --- read-only, Redis down ---------------------------------------------------------------
async def test_read_only_server_lists_without_buttons_and_refuses_aborts(
    redis_server: RedisServer, web_prefix: str, worker: WorkerProcess
) -> None:
    with WebServer(redis_server.url, web_prefix, read_only=True) as web:
        async with httpx.AsyncClient(base_url=web.base, timeout=30) as anonymous:
            page = await anonymous.get("/")
            assert page.status_code == 200 and 'data-read-only="true"' in page.text
            assert (await anonymous.get("/tasks")).status_code == 200
            assert (await anonymous.get("/workers")).json()["workers"]
            task_id = uuid.uuid4().hex
            refused = await anonymous.post(f"/tasks/{task_id}/abort", json={})
            assert refused.status_code == 403 and "read-only" in refused.json()["detail"]
            bulk = await anonymous.post("/tasks/abort", json={"task_name": "x", "confirm": True})
            assert bulk.status_code == 403
            assert (await anonymous.get(f"/tasks/{task_id}")).json()["state"] == "unknown"


async def test_redis_unreachable_is_503_with_the_message_and_no_password(
    redis_server: RedisServer, web_prefix: str
) -> None:
    dead = f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0"
    with WebServer(redis_server.url, web_prefix, token=TOKEN, abort_url=dead) as web:
        async with httpx.AsyncClient(base_url=web.base, headers=web.headers, timeout=30) as c:
            answers = [
                await c.get("/tasks"),
                await c.get("/workers"),
                await c.get(f"/tasks/{uuid.uuid4().hex}"),
                await c.post(f"/tasks/{uuid.uuid4().hex}/abort", json={"reason": "x"}),
                await c.post("/tasks/abort", json={"task_name": "sleeper", "confirm": True}),
            ]
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert "s3cret-pw" not in answer.text
        assert "cannot reach redis" in answer.json()["detail"].lower()
    assert "127.0.0.1" in answers[0].json()["detail"]  # it says where it tried


# --- refused at build time -----------------------------------------------------------------
def test_unsafe_or_broken_setups_are_refused_when_built() -> None:
    with_mw = InMemoryBroker().with_middlewares(AbortMiddleware())
    with pytest.raises(AbortConfigError, match="no AbortMiddleware"):
        abort_router(InMemoryBroker(), dependencies=[Depends(lambda: None)])
    with pytest.raises(AbortConfigError, match="without dependencies"):
        abort_router(with_mw)
    with pytest.raises(AbortConfigError, match="without dependencies"):
        abort_router(with_mw, dependencies=[])
    assert abort_router(with_mw, allow_anonymous=True).routes
    assert abort_router(with_mw, dependencies=[Depends(lambda: None)]).routes
    with pytest.raises(AbortConfigError, match="token"):
        create_app(with_mw, token=None)
    assert create_app(with_mw, token=None, read_only=True).routes


def test_cli_web_refuses_to_start_without_a_token() -> None:
    def web(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "taskiq_abort.cli", "web", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            # A bare environment (no TASKIQ_ABORT_ token variable); bytecode still goes where
            # the caller sends it, never into the tree.
            env={
                "PATH": "/usr/bin:/bin",
                "PYTHONPATH": str(ROOT),
                **{k: os.environ[k] for k in ("PYTHONPYCACHEPREFIX",) if k in os.environ},
            },
            check=False,
        )

    no_token = web("--broker", "tests.web_app:broker")
    assert no_token.returncode == 2 and "token" in no_token.stderr
    assert "--read-only" in no_token.stderr
    no_broker = web("--redis-url", "redis://127.0.0.1:1/0", "--token", "t")
    assert no_broker.returncode == 2 and "--broker" in no_broker.stderr
    assert "required: --broker" in no_broker.stderr

    # --help lists only what web takes: every option it lists is one it accepts
    helped = web("--help")
    assert helped.returncode == 0
    listed = set(re.findall(r"(--[a-z-]+)", helped.stdout))
    assert listed == {"--help", "--broker", "--host", "--port", "--token", "--read-only",
                      "--title", "--debug"}, listed  # fmt: skip
