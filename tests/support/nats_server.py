"""A throwaway NATS server with JetStream for tests, the NATS twin of ``testing.RedisServer``.

It runs ``nats-server -js`` on a free loopback port with a store directory of its own, and is
stopped by PID: tests never touch a NATS server they did not start (such as a machine's own on
4222). Uses ``nats-server`` from PATH (or ``TASKIQ_ABORT_NATS_SERVER``)::

    server = NatsServer().start()
    try:
        broker = PullBasedJetStreamBroker(server.url, ...)
        ...
    finally:
        server.cleanup()
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.redis_servers import free_port, stop_process


def find_nats_binary() -> str:
    """``nats-server`` from ``TASKIQ_ABORT_NATS_SERVER``, PATH or the sbin directories."""
    override = os.environ.get("TASKIQ_ABORT_NATS_SERVER")
    if override:
        return override
    found = shutil.which("nats-server") or shutil.which(
        "nats-server", path="/usr/local/sbin:/usr/sbin:/sbin"
    )
    if found:
        return found
    raise RuntimeError("no nats-server found: install one (apt-get install nats-server)")


class NatsServer:
    """One ``nats-server -js`` process the tests own, on ``127.0.0.1:<port>``."""

    def __init__(self, port: int | None = None) -> None:
        self.binary = find_nats_binary()
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="taskiq-abort-nats-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def _args(self) -> list[str]:
        return [
            self.binary, "-a", "127.0.0.1", "-p", str(self.port),
            "-js", "-sd", str(Path(self.dir, "jetstream")),
            "-l", str(Path(self.dir, "server.log")),
        ]  # fmt: skip

    def _answers(self) -> bool:
        """The server greets every client with its ``INFO`` line once it accepts them."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
            return sock.recv(5) == b"INFO "

    def start(self, timeout: float = 10.0) -> NatsServer:
        self.proc = subprocess.Popen(
            self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):
                if self._answers():
                    return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.cleanup()
                raise RuntimeError(f"{self.binary} on port {self.port} did not start")
            time.sleep(0.02)  # the server is starting; there is no event to wait on

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.proc, sig)
        self.proc = None

    def cleanup(self) -> None:
        """Stop the server and remove its store directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
