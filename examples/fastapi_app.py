"""A FastAPI app whose users start long reports, stop them, and see what became of them;
its operators get the API and dashboard of ``taskiq_abort.web`` under ``/admin/tasks``.

Run it against your Redis (tests/test_examples.py runs it exactly like this)::

    export REDIS_URL=redis://localhost:6379/0 ADMIN_TOKEN=change-me
    taskiq worker examples.fastapi_app:broker          # the workers
    uvicorn examples.fastapi_app:app                   # the web app

    curl -X POST localhost:8000/reports                # {"task_id": "4f2a..."}
    curl localhost:8000/reports/4f2a...                # {"state": "running", ...}
    curl -X POST localhost:8000/reports/4f2a.../abort  # {"status": "aborted", ...}
    curl localhost:8000/reports/4f2a...                # {"state": "aborted", "reason": ...}
    # the dashboard: http://localhost:8000/admin/tasks/ with "Authorization: Bearer change-me"
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from taskiq_abort import (
    AbortMiddleware,
    InvalidTaskIdError,
    TaskAbortedError,
    abort,
    find_middleware,
)
from taskiq_abort.web import abort_router

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
ADMIN_TOKEN = os.environ.get("ADMIN_TOKEN", "")

broker = (
    RedisStreamBroker(REDIS_URL, queue_name="reports")
    .with_result_backend(RedisAsyncResultBackend(REDIS_URL))
    .with_middlewares(AbortMiddleware(REDIS_URL, prefix="reports"))
)


@broker.task(task_name="build_report")
async def build_report(pages: int) -> str:
    """A long task: each page takes a second. An abort cancels it at its next await."""
    for _ in range(pages):
        await asyncio.sleep(1)
    return f"{pages} pages"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await broker.startup()
    yield
    await broker.shutdown()


app = FastAPI(title="reports", lifespan=lifespan)


@app.exception_handler(InvalidTaskIdError)
async def invalid_task_id(request: Request, exc: InvalidTaskIdError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=422)  # nothing was sent


@app.post("/reports")
async def start_report(pages: int = 3600) -> dict[str, str]:
    """Kick a long task; its id is what the client keeps."""
    task = await build_report.kiq(pages)
    return {"task_id": task.task_id}


@app.post("/reports/{task_id}/abort")
async def stop_report(task_id: str, reason: str = "cancelled by the user") -> dict[str, object]:
    """Stop it, queued or running: ``aborted``, ``revoked``, ``finished`` or ``unconfirmed``."""
    outcome = await abort(broker, task_id, reason=reason)
    return outcome.to_dict()


@app.get("/reports/{task_id}")
async def report_state(task_id: str) -> dict[str, Any]:
    """``queued``, ``running`` (and where), ``done``, ``failed``, or ``aborted`` with the reason."""
    if await broker.result_backend.is_result_ready(task_id):
        result = await broker.result_backend.get_result(task_id)
        if isinstance(result.error, TaskAbortedError):
            return {"task_id": task_id, "state": "aborted", "reason": result.error.reason}
        if result.is_err:
            return {"task_id": task_id, "state": "failed", "error": str(result.error)}
        return {"task_id": task_id, "state": "done", "result": result.return_value}
    running = await find_middleware(broker).backend.find_running(task_id)
    if running is not None:
        return {"task_id": task_id, "state": "running", "worker": running.worker}
    return {"task_id": task_id, "state": "queued"}


def require_admin(authorization: str = Header("")) -> None:
    """Your authentication goes here; this one wants ``Authorization: Bearer $ADMIN_TOKEN``."""
    expected = f"Bearer {ADMIN_TOKEN}"
    if not ADMIN_TOKEN or not secrets.compare_digest(authorization.encode(), expected.encode()):
        raise HTTPException(401, "admins only", headers={"WWW-Authenticate": "Bearer"})


app.include_router(
    abort_router(broker, dependencies=[Depends(require_admin)]), prefix="/admin/tasks"
)
