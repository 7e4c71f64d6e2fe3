"""The admin CLI answers at once: with --redis-url it never imports taskiq (the slow part)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

PROBE = """
import contextlib, io, json, sys
from taskiq_abort.cli.main import main
with contextlib.redirect_stdout(io.StringIO()):
    code = main(sys.argv[1:])
heavy = sorted(m for m in sys.modules if m == "taskiq" or m.startswith(("taskiq.", "fastapi")))
print(json.dumps({"code": code, "heavy": heavy}))
"""


def probe(*args: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(proc.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def test_ls_and_abort_with_redis_url_do_not_import_taskiq(redis_url: str, prefix: str) -> None:
    conn = ["--redis-url", redis_url, "--prefix", prefix]
    assert probe("ls", *conn) == {"code": 0, "heavy": []}
    assert probe("0123456789abcdef0123456789abcdef", *conn) == {"code": 0, "heavy": []}  # revoked
    assert probe("status", "0123456789abcdef0123456789abcdef", *conn)["heavy"] == []


def test_public_names_still_import_on_demand() -> None:
    code = (
        "import sys, taskiq_abort; assert 'taskiq' not in sys.modules;"
        "from taskiq_abort import AbortMiddleware, TaskAbortedError, abort, shield;"
        "from taskiq_abort.cli import AbortCMD; from taskiq.abc.cmd import TaskiqCMD;"
        "assert issubclass(AbortCMD, TaskiqCMD) and 'abort' in dir(taskiq_abort);"
        "print(TaskAbortedError.__module__)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip() == "taskiq_abort.errors"
