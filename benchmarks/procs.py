"""Processes the benchmarks start (workers, helpers), stopped by PID; CPU and RSS from /proc."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import ClassVar

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def total_cpu_seconds(pids: Iterable[int]) -> float:
    return sum(cpu_seconds(p) for p in pids)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def child_pids(pid: int) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    return sorted(int(p) for p in out.split())


def raise_fd_limit(want: int) -> int:
    """Raise this process's soft open-files limit towards ``want`` (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


class Proc:
    """A child process in its own process group, logging to a file; stopped by its PID."""

    started: ClassVar[list[Proc]] = []

    def __init__(self, args: Sequence[str], name: str, env: dict[str, str] | None = None) -> None:
        self.args = list(args)
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"taskiq-abort-bench-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Proc:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args, env=self.env, cwd=ROOT, stdout=log, stderr=log, start_new_session=True
            )
        Proc.started.append(self)
        return self

    def children(self) -> list[int]:
        return child_pids(self.pid)

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log.read_text()[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{self.args[2:4]} exited; log {self.log}:\n{tail}")

    def stop(self, sig: int = signal.SIGKILL, grace: float = 10.0) -> None:
        """Send ``sig`` to the process group; SIGKILL it if the leader outlives ``grace``."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        self.proc = None
        with contextlib.suppress(OSError):
            self.log.unlink()

    @staticmethod
    def terminate(procs: Sequence[Proc], grace: float) -> None:
        """SIGTERM every one first (they shut down side by side), then wait for each."""
        for proc in procs:
            if proc.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.stop(signal.SIGTERM, grace)

    @classmethod
    def stop_all(cls) -> None:
        for proc in cls.started:
            proc.stop()
        cls.started.clear()


class Worker(Proc):
    """``taskiq worker benchmarks.app:broker`` (see benchmarks/app.py for the variants)."""

    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        kind: str = "stream",
        abort: bool = True,
        workers: int = 1,
        max_async: int | None = None,
        floor: bool = False,
        start_floor: bool = False,
        interrupt: bool = False,
        index: str = "",
    ) -> None:
        self.url, self.prefix, self.workers, self.abort = url, prefix, workers, abort
        args = [
            sys.executable,
            "-m",
            "taskiq",
            "worker",
            "benchmarks.app:broker",
            "--workers",
            str(workers),
            "--log-level",
            "WARNING",
            "--shutdown-timeout",
            "2",
        ]
        if max_async is not None:
            args += ["--max-async-tasks", str(max_async)]
        env = {
            "BENCH_URL": url,
            "BENCH_PREFIX": prefix,
            "BENCH_BROKER": kind,
            "BENCH_INTERRUPT": "1" if interrupt else "0",
            "BENCH_INDEX": index,  # AbortMiddleware(index_labels=...), comma-separated
            "BENCH_ABORT": (
                "floor" if floor else "start-floor" if start_floor else "1" if abort else "0"
            ),
        }
        super().__init__(args, prefix, env)

    def start(self) -> Worker:
        super().start()
        return self

    def stop(self, sig: int = signal.SIGKILL, grace: float = 10.0) -> None:
        super().stop(sig, grace)  # SIGKILL by default: stream workers can hang on SIGTERM


async def poll_until(
    check: Callable[[], Awaitable[bool]],
    timeout: float,
    what: str,
    proc: Proc | None = None,
    interval: float = 0.05,
) -> None:
    """Poll ``check`` (registry/counter reads: there is no event to block on) until true."""
    deadline = time.monotonic() + timeout
    while not await check():
        if proc is not None:
            proc.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)
