"""The standalone operator server: ``taskiq-abort web --broker module:broker`` (uvicorn).

For apps without FastAPI. Token auth: ``Authorization: Bearer TOKEN`` for scripts, and for
browsers ``/?token=TOKEN`` once, which sets an HttpOnly, SameSite=Strict cookie and redirects to
the page without the token in its address.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from taskiq_abort.errors import AbortConfigError
from taskiq_abort.web.router import abort_router

if TYPE_CHECKING:
    from taskiq import AsyncBroker

COOKIE = "taskiq_abort_token"


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
            "send Authorization: Bearer TOKEN, or open the dashboard once as /?token=TOKEN",
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

        @app.middleware("http")
        async def login(
            request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            offered = request.query_params.get("token")
            if request.method == "GET" and offered is not None:
                if not auth.matches(offered):
                    return Response("wrong token", status_code=401, media_type="text/plain")
                query = urlencode(
                    [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
                )
                target = request.url.path + (f"?{query}" if query else "")
                response = RedirectResponse(target, status_code=303)
                response.set_cookie(COOKIE, offered, httponly=True, samesite="strict", path="/")
                return response
            return await call_next(request)

    return app


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
    uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False)
