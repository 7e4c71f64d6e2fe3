"""A real ``taskiq-abort web`` server (uvicorn) in a subprocess, for the web tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import uuid

from tests.conftest import ROOT, WorkerProcess
from tests.support.redis_servers import free_port

APP = "tests.web_app:broker"


class UvicornProcess:
    """A uvicorn server in a subprocess (its own session), ready once it logs that it listens."""

    def __init__(self, args: list[str], env: dict[str, str], port: int) -> None:
        self.args, self.env, self.port = args, env, port
        self.base = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._ready = threading.Event()

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:  # uvicorn logs to both; a full pipe would block it
            self.lines.append(line)
            if "Uvicorn running on" in line:  # logged once the socket listens
                self._ready.set()
        self._ready.set()  # exited: wake the waiter, which then sees the exit

    def start(self, timeout: float = 60.0) -> UvicornProcess:
        self.proc = subprocess.Popen(
            self.args,
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.PIPE,  # its access log: tests read what it logs
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._drain, daemon=True).start()
        self._ready.wait(timeout)
        if self.proc.poll() is not None or not any("Uvicorn running" in x for x in self.lines):
            self.stop()
            raise RuntimeError(f"web server did not start: {''.join(self.lines)[-3000:]}")
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> UvicornProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class WebServer(UvicornProcess):
    """``python -m taskiq_abort.cli web --broker tests.web_app:broker ...`` on a free port."""

    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        token: str | None = None,
        read_only: bool = False,
        abort_url: str | None = None,
        broker: str = APP,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        port = free_port()
        self.token = token
        args = ["--broker", broker, "--port", str(port)]
        if token is not None:
            args += ["--token", token]
        if read_only:
            args.append("--read-only")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TASKIQ_ABORT_")},
            "TASKIQ_ABORT_TEST_URL": url,
            "TASKIQ_ABORT_TEST_PREFIX": prefix,
            "TASKIQ_ABORT_TEST_ABORT_URL": abort_url or "",
            "PYTHONPATH": str(ROOT),
            **(extra_env or {}),
        }
        super().__init__([sys.executable, "-m", "taskiq_abort.cli", "web", *args], env, port)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def __enter__(self) -> WebServer:
        self.start()
        return self


def web_worker(url: str, prefix: str) -> WorkerProcess:
    """A real ``taskiq worker tests.web_app:broker`` (tests.app's tasks, plus the hostile one)."""
    worker = WorkerProcess(url, prefix)
    worker.args[worker.args.index("tests.app:broker")] = APP
    return worker


def new_prefix() -> str:
    return f"w{uuid.uuid4().hex[:10]}"
