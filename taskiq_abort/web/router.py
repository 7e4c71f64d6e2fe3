"""``abort_router(broker, ...)``: the operator API and its dashboard, as a FastAPI router."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from taskiq_abort._read.names import AmbiguousTaskNameError
from taskiq_abort._scrub import passwords, scrub
from taskiq_abort._wire.protocol import MAX_TASK_ID_LENGTH, RULE_ID_PATTERN
from taskiq_abort.errors import AbortBackendError, AbortConfigError, InvalidTaskIdError
from taskiq_abort.web import assets, models
from taskiq_abort.web.service import TaskService

if TYPE_CHECKING:
    from fastapi import params
    from taskiq import AsyncBroker

_T = TypeVar("_T")

TaskId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=MAX_TASK_ID_LENGTH,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="a TaskIQ task id (no control characters, at most 256 characters)",
    ),
]
RuleId = Annotated[
    str,
    Path(
        pattern=RULE_ID_PATTERN,
        description="an abort rule's id (a letter or digit, then up to 63 more or '-', '_'), "
        "as GET /rules lists them",
    ),
]
_ERRORS: dict[int | str, dict[str, Any]] = {
    503: {"model": models.Problem, "description": "Redis (the abort control plane) unreachable"},
}
_BY_NAME_ERRORS: dict[int | str, dict[str, Any]] = {
    409: {"model": models.Problem, "description": "a bare name matches several task names"},
}
_WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    403: {"model": models.Problem, "description": "the router is read-only"},
    415: {"model": models.Problem, "description": "the body is not application/json"},
}


_SURROGATE = re.compile("[\ud800-\udfff]")


def _printable(value: Any) -> Any:
    """``value`` with lone surrogates (valid in JSON, not in UTF-8) replaced, recursively."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_printable(k): _printable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_printable(v) for v in value]
    return value


_UNPARSED = "There was an error parsing the body"  # FastAPI's 400 for a body it cannot read


class _Route(APIRoute):
    """Answers validation errors itself, as FastAPI does, but never with a 500: the error
    echoes the input, and ``"\\ud800"`` in a JSON body cannot be encoded back to UTF-8."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                detail = _printable(jsonable_encoder(exc.errors()))
                return JSONResponse({"detail": detail}, status_code=422)
            except StarletteHTTPException as exc:  # what FastAPI raises for an unreadable body
                if exc.status_code != 400 or exc.detail != _UNPARSED:
                    raise
                # Bytes that are not UTF-8: as invalid as any other body that is not JSON.
                detail = [{"loc": ["body"], "msg": "not valid JSON", "type": "json_invalid"}]
                return JSONResponse({"detail": detail}, status_code=422)

        return route


def _require_json(request: Request) -> None:
    """State changes take JSON only: a cross-site HTML form cannot send it (CSRF)."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise HTTPException(415, "send the body as application/json")


def _refuse_writes() -> None:
    raise HTTPException(403, "this operator API is read-only: aborting is disabled")


class _Errors:
    """Turns library errors into HTTP answers with the library's message, minus passwords."""

    def __init__(self, service: TaskService) -> None:
        self.secrets = passwords(service.backend.url)

    def scrub(self, message: str) -> str:
        return " ".join(scrub(message, self.secrets).split())

    async def __call__(self, op: Awaitable[_T], where: str = "path") -> _T:
        try:
            return await op
        except InvalidTaskIdError as exc:  # FastAPI's own 422 shape, so the schema holds
            detail = [{"loc": [where, "task_id"], "msg": str(exc), "type": "value_error"}]
            raise HTTPException(422, detail) from exc
        except AbortBackendError as exc:
            raise HTTPException(503, self.scrub(str(exc))) from exc
        except AmbiguousTaskNameError as exc:
            raise HTTPException(409, str(exc)) from exc


def abort_router(
    broker: AsyncBroker,
    *,
    dependencies: Sequence[params.Depends] | None = None,
    read_only: bool = False,
    allow_anonymous: bool = False,
    title: str = "TaskIQ tasks",
) -> APIRouter:
    """A FastAPI router: the operator API (``/tasks``, ``/workers``...) and a dashboard at ``/``.

    ::

        app.include_router(
            abort_router(broker, dependencies=[Depends(require_admin)]), prefix="/admin/tasks"
        )

    :param broker: the application's broker, with :class:`~taskiq_abort.AbortMiddleware`.
    :param dependencies: FastAPI dependencies run before every endpoint, the dashboard
        included: your authentication. Required, unless ``allow_anonymous=True``.
    :param read_only: list tasks and workers only; the abort endpoints answer 403 and the
        dashboard shows no buttons.
    :param allow_anonymous: build the router without ``dependencies`` (e.g. behind a proxy
        that authenticates); anyone who reaches it can abort tasks.
    :param title: the dashboard's heading.
    :raises AbortConfigError: the broker has no ``AbortMiddleware``, or no ``dependencies``
        were given without ``allow_anonymous=True``.
    """
    service = TaskService(broker)  # refuses a broker without AbortMiddleware
    if not dependencies and not allow_anonymous:
        raise AbortConfigError(
            "abort_router() without dependencies would let anyone abort tasks: pass "
            "dependencies=[Depends(your_auth)], or allow_anonymous=True if something in "
            "front of the app authenticates"
        )
    guard = _Errors(service)
    router = APIRouter(
        dependencies=list(dependencies or []), tags=["taskiq-abort"], route_class=_Route
    )
    writes = [Depends(_refuse_writes)] if read_only else [Depends(_require_json)]
    page = assets.dashboard_html(title=title, read_only=read_only)

    @router.get("/", include_in_schema=False)
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(page, headers=assets.PAGE_HEADERS)

    @router.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        return assets.static_response(name)

    @router.get("/tasks", response_model=models.TaskPage, responses={**_ERRORS, **_BY_NAME_ERRORS})
    async def list_tasks(
        name: Annotated[str | None, Query(max_length=MAX_TASK_ID_LENGTH)] = None,
        worker: Annotated[str | None, Query(max_length=MAX_TASK_ID_LENGTH)] = None,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
        label: Annotated[
            list[str] | None,
            Query(description="NAME=VALUE: only tasks with this indexed label (repeat: all)"),
        ] = None,
    ) -> models.TaskPage:
        """Running tasks (task id, name, worker, host, pid, started, abort requested).

        Filter by task ``name`` (``crunch`` stands for the one ``module:crunch``) and by
        ``worker`` (an id, or a prefix of one); paged with ``offset`` and ``limit``, in a
        stable order (by worker, then oldest first).
        """
        labels: dict[str, str] = {}
        for item in label or ():
            key, sep, value = item.partition("=")
            if not sep or not key:
                msg = f"label {item[:100]!r}: expected NAME=VALUE"
                detail = [{"loc": ["query", "label"], "msg": msg, "type": "value_error"}]
                raise HTTPException(422, detail)
            labels[key] = value
        return await guard(service.list_tasks(name, worker, offset, limit, labels))

    @router.get("/tasks/{task_id}", response_model=models.TaskState, responses=_ERRORS)
    async def task_state(task_id: TaskId) -> models.TaskState:
        """What is known of one task: running where, abort requested, its outcome, a result."""
        return await guard(service.task_state(task_id))

    @router.post(
        "/tasks/abort",
        response_model=models.BulkAbortResult,
        dependencies=writes,
        responses={
            **_WRITE_ERRORS,
            **_BY_NAME_ERRORS,
            400: {"model": models.Problem, "description": '"confirm" is false'},
        },
    )
    async def abort_by_name(body: models.BulkAbortBody) -> models.BulkAbortResult:
        """Abort every running task with this name; ``confirm`` must be ``true``."""
        if not body.confirm:
            raise HTTPException(400, 'a bulk abort needs "confirm": true')
        return await guard(
            service.abort_by_name(body.task_name, body.reason, body.wait, body.timeout, body.grace)
        )

    @router.post(
        "/tasks/{task_id}/abort",
        response_model=models.Outcome,
        dependencies=writes,
        responses=_WRITE_ERRORS,
    )
    async def abort_task(task_id: TaskId, body: models.AbortBody) -> dict[str, object]:
        """Abort a task, queued or running: the ``AbortOutcome`` as JSON.

        ``aborted`` (it was running and stopped), ``revoked`` (it had not started and never
        will), ``finished`` (it already had a result) or ``unconfirmed`` (no confirmation
        within ``timeout``, or ``wait`` false).
        """
        outcome = await guard(
            service.abort(task_id, body.reason, body.wait, body.timeout, body.grace, body.cascade)
        )
        return outcome.to_dict()

    @router.post(
        "/tasks/abort-where",
        response_model=models.WhereResult,
        dependencies=writes,
        responses={
            **_WRITE_ERRORS,
            400: {"model": models.Problem, "description": '"confirm" is false, or a label is '
                  "not indexed (AbortMiddleware(index_labels=...))"},
        },
    )  # fmt: skip
    async def abort_where(body: models.WhereBody) -> models.WhereResult:
        """Abort every running task carrying all ``labels`` (and named ``task_name``), and
        record an abort rule that refuses the matching tasks at their start until it
        expires; ``confirm`` must be ``true``."""
        if not body.confirm:
            raise HTTPException(400, 'a bulk abort needs "confirm": true')
        try:
            return await guard(service.abort_where(body))
        except AbortConfigError as exc:  # a label the middleware does not index
            raise HTTPException(400, str(exc)) from exc

    @router.get("/rules", response_model=models.RuleList, responses=_ERRORS)
    async def rules(limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> models.RuleList:
        """The abort rules in force (``abort-where``, cascades), soonest to expire first: each
        refuses the matching tasks at their start until it expires. ``total`` counts them all
        (a cascade records two per task it was asked for)."""
        return await guard(service.rules(limit))

    @router.post(
        "/rules/{rule_id}/cancel",
        response_model=models.RuleCancelled,
        dependencies=writes,
        responses={
            **_WRITE_ERRORS,
            404: {"model": models.Problem, "description": "no such rule (expired, or cancelled)"},
            400: {"model": models.Problem, "description": "the backend has no abort rules"},
        },
    )
    async def cancel_rule(rule_id: RuleId) -> models.RuleCancelled:
        """Remove an abort rule before it expires: matching tasks that start from now on run
        (those it already stopped stay stopped)."""
        try:
            cancelled = await guard(service.cancel_rule(rule_id))
        except AbortConfigError as exc:  # a custom backend without abort rules
            raise HTTPException(400, str(exc)) from exc
        if not cancelled:
            raise HTTPException(404, f"no abort rule {rule_id} (expired, or cancelled already)")
        return models.RuleCancelled(rule_id=rule_id, cancelled=True)

    @router.get("/workers", response_model=models.WorkerList, responses=_ERRORS)
    async def workers() -> models.WorkerList:
        """Live workers (registered, lease not expired) and how many tasks each runs."""
        return await guard(service.workers())

    @router.get("/outcomes", response_model=models.RecentOutcomes)
    async def recent_outcomes(
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> models.RecentOutcomes:
        """The latest aborts made through this router (this process), newest first."""
        return service.recent_outcomes(limit)

    return router
