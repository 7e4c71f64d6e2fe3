"""The standalone operator server: ``taskiq-abort web --broker module:broker`` (uvicorn).

For apps without FastAPI. Token auth: ``Authorization: Bearer TOKEN`` for scripts; browsers
log in once at ``/login``, a form that POSTs the token and gets an HttpOnly, SameSite=Strict
cookie. The token never travels in a URL, so no access log, proxy log or history holds it.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from taskiq_abort.errors import AbortConfigError
from taskiq_abort.web import assets
from taskiq_abort.web.router import abort_router

if TYPE_CHECKING:
    from taskiq import AsyncBroker

COOKIE = "taskiq_abort_token"
_MAX_LOGIN_BODY = 4096
_TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&\s]*", re.IGNORECASE)


class HideTokenInAccessLog(logging.Filter):
    """Masks ``token=...`` in uvicorn's access log lines, should a caller put it in a URL."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_IN_QUERY.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args
            )
        return True


class TokenAuth:
    """A FastAPI dependency: the request carries the token (bearer header or login cookie)."""

    def __init__(self, token: str) -> None:
        if not token:
            raise AbortConfigError("the token must not be empty")
        self.token = token

    def matches(self, candidate: str | None) -> bool:
        return candidate is not None and secrets.compare_digest(
            candidate.encode("utf-8", "replace"), self.token.encode("utf-8", "replace")
        )

    def __call__(self, request: Request) -> None:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.matches(value.strip()):
            return
        if self.matches(request.cookies.get(COOKIE)):
            return
        raise HTTPException(
            401,
            "send Authorization: Bearer TOKEN, or log in to the dashboard at /login",
            headers={"WWW-Authenticate": "Bearer"},
        )


def create_app(
    broker: AsyncBroker,
    *,
    token: str | None,
    read_only: bool = False,
    title: str = "TaskIQ tasks",
) -> FastAPI:
    """The operator API and dashboard at ``/``, starting and stopping ``broker`` with the app.

    :param token: required unless ``read_only`` (then anonymous reads are allowed).
    :raises AbortConfigError: no token and not read-only, or no AbortMiddleware on the broker.
    """
    if not token and not read_only:
        raise AbortConfigError(
            "the web server needs a token (--token or $TASKIQ_ABORT_WEB_TOKEN), "
            "or --read-only to serve the lists without the abort buttons"
        )
    auth = TokenAuth(token) if token else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await broker.startup()
        try:
            yield
        finally:
            await broker.shutdown()

    # No /docs: Swagger UI would load its files from a CDN. /openapi.json stays.
    app = FastAPI(title="taskiq-abort", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.include_router(
        abort_router(
            broker,
            dependencies=[Depends(auth)] if auth else None,
            read_only=read_only,
            allow_anonymous=auth is None,
            title=title,
        )
    )
    if auth is not None:
        _add_login(app, auth)
    return app


def _add_login(app: FastAPI, auth: TokenAuth) -> None:
    """``/login``: a form that POSTs the token for the cookie; ``GET /`` sends browsers there."""

    @app.get("/login", include_in_schema=False)
    async def login_page() -> HTMLResponse:
        return HTMLResponse(assets.login_html(), headers=assets.LOGIN_HEADERS)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        body = await request.body()
        form = parse_qs(body[:_MAX_LOGIN_BODY].decode("utf-8", "replace"))
        offered = next(iter(form.get("token", [])), None)
        if offered is None or not auth.matches(offered):
            page = assets.login_html(error="wrong token")
            return HTMLResponse(page, status_code=401, headers=assets.LOGIN_HEADERS)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, offered, httponly=True, samesite="strict", path="/")
        return response

    @app.middleware("http")
    async def to_login(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if "token" in request.query_params:
            return Response(
                "the token does not go in the address (logs and history keep it): "
                "log in at /login, or send Authorization: Bearer TOKEN",
                status_code=400,
                media_type="text/plain",
            )
        if request.method == "GET" and request.url.path == "/":
            try:
                auth(request)
            except HTTPException:
                return RedirectResponse("/login", status_code=303)
        return await call_next(request)


def serve(
    broker: AsyncBroker,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    read_only: bool = False,
    title: str = "TaskIQ tasks",
    log_level: str = "info",
) -> None:
    """Run :func:`create_app` under uvicorn until interrupted."""
    import uvicorn

    app = create_app(broker, token=token, read_only=read_only, title=title)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, server_header=False)
    logging.getLogger("uvicorn.access").addFilter(HideTokenInAccessLog())  # after its set-up
    uvicorn.Server(config).run()
