"""``taskiq-abort web``: the operator API and dashboard, standalone (extra ``web``)."""

from __future__ import annotations

import argparse
import os
import sys

from taskiq_abort.cli.connect import CLIError, load_broker

ENV_TOKEN = "TASKIQ_ABORT_WEB_TOKEN"


def build_parser(prog: str) -> argparse.ArgumentParser:
    """Only what ``web`` takes: it serves one broker, so none of the Redis options."""
    parser = argparse.ArgumentParser(
        prog=f"{prog} web",
        description="Serve the operator API and the live dashboard of your broker (uvicorn).",
        epilog=f"Aborting needs a token: --token or ${ENV_TOKEN}. In a browser, log in "
        "once at http://HOST:PORT/login; scripts send 'Authorization: Bearer TOKEN'. "
        "--read-only needs none.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--broker",
        metavar="MODULE:BROKER",
        required=True,
        help="your app's broker (or a factory function), with AbortMiddleware; the "
        "current directory is importable",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (8000)")
    parser.add_argument("--token", help=f"the token callers must send (default: ${ENV_TOKEN})")
    parser.add_argument(
        "--read-only", action="store_true", help="lists only: no abort buttons, aborts get 403"
    )
    parser.add_argument("--title", default="TaskIQ tasks", help="the dashboard's heading")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    return parser


def run(args: argparse.Namespace, prog: str) -> int:
    """Load the broker and serve until interrupted; :class:`CLIError` for what the user can fix."""
    token = args.token or os.environ.get(ENV_TOKEN) or None
    if token is None and not args.read_only:
        raise CLIError(
            f"web needs a token to allow aborts: --token TOKEN or ${ENV_TOKEN} "
            "(e.g. python3 -c 'import secrets; print(secrets.token_urlsafe())'), "
            "or --read-only"
        )
    try:
        from taskiq_abort.web.server import serve
    except ImportError as exc:
        raise CLIError(
            f"web needs FastAPI and uvicorn ({exc}): pip install 'taskiq-abort[web]'"
        ) from exc
    broker = load_broker(args.broker)
    login = "" if token is None else " (log in once at /login with your token)"
    where = f"http://{args.host}:{args.port}/"
    print(f"{prog} web: dashboard at {where}{login}", file=sys.stderr, flush=True)
    serve(
        broker,
        host=args.host,
        port=args.port,
        token=token,
        read_only=args.read_only,
        title=args.title,
        log_level="debug" if args.debug else "info",
    )
    return 0
