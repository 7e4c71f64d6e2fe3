"""The dashboard's files, shipped in the package (it fetches nothing from the internet)."""

from __future__ import annotations

import html
from functools import cache
from importlib import resources

from fastapi import HTTPException
from fastapi.responses import Response

_TYPES = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
PAGE_HEADERS = {
    # Only our own script, style and API: an injected <script> or <img onerror> cannot run.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@cache
def _read(name: str) -> str:
    return resources.files("taskiq_abort.web").joinpath(f"static/{name}").read_text("utf-8")


def dashboard_html(*, title: str, read_only: bool) -> str:
    """The page, with its title escaped and the read-only flag the script reads."""
    return (
        _read("dashboard.html")
        .replace("{{title}}", html.escape(title))
        .replace("{{read_only}}", "true" if read_only else "false")
    )


LOGIN_HEADERS = {
    **PAGE_HEADERS,
    "Content-Security-Policy": PAGE_HEADERS["Content-Security-Policy"].replace(
        "form-action 'none'", "form-action 'self'"
    ),
}


def login_html(*, error: str = "") -> str:
    """The standalone server's login form: the token travels in a POST body, never in a URL."""
    return _read("login.html").replace("{{error}}", html.escape(error))


def static_response(name: str) -> Response:
    """One of the dashboard's files by name; 404 for anything else."""
    media_type = _TYPES.get(name)
    if media_type is None:
        raise HTTPException(404, "no such file")
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
    return Response(_read(name), media_type=media_type, headers=headers)
