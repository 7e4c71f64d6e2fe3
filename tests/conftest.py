"""Fixtures: one throwaway redis-server per session, worker processes, event waiting."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir
from taskiq import AsyncBroker

from taskiq_abort._wire.keys import KeySpace
from taskiq_abort.backends.base import AbortBackend
from taskiq_abort.backends.memory import MemoryAbortBackend
from taskiq_abort.backends.redis import RedisAbortBackend
from tests.app import make_broker, sync_redis
from tests.support.redis_servers import ClusterServers, RedisServer, SentinelServers

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pytest_configure(config: pytest.Config) -> None:
    """Tests never write into the working tree: Hypothesis keeps its example database and
    caches (``.hypothesis``) in a directory of this run's own, and replays nothing."""
    hypothesis_home = Path(tempfile.mkdtemp(prefix="taskiq-abort-hypothesis-"))
    config.add_cleanup(lambda: shutil.rmtree(hypothesis_home, ignore_errors=True))
    set_hypothesis_home_dir(hypothesis_home)
    settings.register_profile("suite", database=None)
    settings.load_profile("suite")


HEAVY = os.environ.get("TASKIQ_ABORT_HEAVY") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``heavy`` (a load of thousands of tasks, the longer failover scenarios) run
    with ``TASKIQ_ABORT_HEAVY=1``, one at a time (.ci/run runs them so, after the suite): they
    keep the README's test command short, and they want the machine to themselves."""
    if HEAVY:
        return
    skip = pytest.mark.skip(reason="heavy: set TASKIQ_ABORT_HEAVY=1 (.ci/run runs these)")
    for item in items:
        if item.get_closest_marker("heavy") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _worker_logs(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Worker logs go to pytest's temporary directory (it keeps the last three runs)."""
    WorkerProcess.log_dir = tmp_path_factory.mktemp("workers")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ClusterServers]:
    """A Redis Cluster (3 masters + 3 replicas), started for the first test that needs it."""
    servers = ClusterServers().start()
    try:
        yield servers
    finally:
        servers.cleanup()


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[SentinelServers]:
    """A master, a replica and 3 sentinels, started for the first test that needs it."""
    servers = SentinelServers().start()
    try:
        yield servers
    finally:
        servers.cleanup()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    if redis_server.proc is None:  # a previous test stopped it
        redis_server.start()
    return redis_server.url


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own: tests never see each other's keys."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def client(redis_url: str, prefix: str) -> AsyncIterator[AsyncBroker]:
    """A started client broker of the test app (``tests/app.py``), on a RedisStreamBroker."""
    broker = make_broker(redis_url, prefix)
    await broker.startup()
    yield broker
    await broker.shutdown()


@pytest.fixture(params=["redis", "memory"])
async def backend(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[AbortBackend]:
    """Each backend in turn, driven directly: Redis (this worker's server) and in-memory."""
    backend: AbortBackend = MemoryAbortBackend()
    if request.param == "redis":
        backend = RedisAbortBackend(request.getfixturevalue("redis_url"), prefix=prefix)
    yield backend
    await backend.close()


@pytest.fixture
async def client_of(redis_url: str, prefix: str) -> AsyncIterator[AsyncBroker]:
    """A started client broker of the test app on a ListQueueBroker (workers with
    ``broker="list"``)."""
    broker = make_broker(redis_url, prefix, "list")
    await broker.startup()
    yield broker
    await broker.shutdown()


@pytest.fixture
def list_worker(redis_url: str, prefix: str) -> Iterator[WorkerProcess]:
    """Two worker processes of tests/labels_app.py on its ListQueueBroker."""
    # Imported here: it needs taskiq-aio-pika, which .ci/run's core-test virtualenvs lack.
    from tests.labels_app import env

    process = WorkerProcess(
        redis_url, prefix, workers=2, env=env("list", redis_url, prefix),
        app="tests.labels_app:broker",
    )  # fmt: skip
    yield process.start()
    process.stop()


@pytest.fixture
def rclient(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


class Events:
    """Waits for the events a test task pushes (see tests/app.py), consuming them with BLPOP."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.seen: dict[str, list[tuple[str, float]]] = {}

    def _key(self, task_id: str) -> str:
        return f"{self.prefix}:test-events:{task_id}"

    def _take(self, task_id: str, item: str) -> None:
        name, stamp = item.rsplit(" ", 1)
        self.seen.setdefault(task_id, []).append((name, float(stamp)))

    def wait(self, task_id: str, event: str, timeout: float = 30.0, count: int = 1) -> float:
        """Block until ``event`` arrived ``count`` times for ``task_id`` (a task delivered to
        several workers, or delivered again, reports it once per run); return the timestamp
        of the ``count``-th."""
        deadline = time.monotonic() + timeout
        while True:
            stamps = [stamp for name, stamp in self.seen.get(task_id, []) if name == event]
            if len(stamps) >= count:
                return stamps[count - 1]
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"task {task_id} never reported {event!r}: {self.all(task_id)}")
            # Below redis-py 8's default 5 s socket timeout, or the read times out first.
            popped = self.client.blpop([self._key(task_id)], timeout=min(left, 2.0))
            if popped is not None:
                self._take(task_id, popped[1])

    def all(self, task_id: str) -> list[str]:
        """Every event so far, without waiting."""
        while (item := self.client.lpop(self._key(task_id))) is not None:
            self._take(task_id, item)
        return [name for name, _ in self.seen.get(task_id, [])]


@pytest.fixture
def events(rclient: redis.Redis, prefix: str) -> Events:
    return Events(rclient, prefix)


class WorkerProcess:
    """``taskiq worker tests.app:broker`` (or another ``app``) in a subprocess; stopped by PID
    (SIGKILL fallback)."""

    log_dir = Path(os.environ.get("TMPDIR", "/tmp"))  # pytest's tmp dir, set per session below

    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        workers: int = 1,
        broker: str = "stream",
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        app: str = "tests.app:broker",
        python: str = sys.executable,
        cwd: Path = ROOT,
    ) -> None:
        self.url, self.prefix, self.workers, self.cwd = url, prefix, workers, cwd
        self.env = {
            **os.environ,
            "TASKIQ_ABORT_TEST_URL": url,
            "TASKIQ_ABORT_TEST_PREFIX": prefix,
            "TASKIQ_ABORT_TEST_BROKER": broker,
            "PYTHONPATH": str(cwd),
            **(env or {}),
        }
        self.args = [
            python, "-m", "taskiq", "worker", app,
            "--workers", str(workers), "--max-async-tasks", "2000",
            "--shutdown-timeout", "3", *extra_args,
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.log_dir / f"worker-{prefix}-{uuid.uuid4().hex[:6]}.log"

    def start(self, wait: bool = True) -> WorkerProcess:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args,
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        if wait:
            try:
                self.wait_ready()
            except BaseException:  # nobody will stop what did not start: stop it here
                self.stop()
                raise
        return self

    def live_workers(self) -> list[str]:
        client = sync_redis(self.url)  # the app's Redis: one, a Cluster or Sentinel's master
        try:
            key = KeySpace(self.prefix).workers
            now_ms = (
                int(client.time(target_nodes=client.get_node_from_key(key))[0]) * 1000
                if isinstance(client, redis.RedisCluster)
                else int(client.time()[0]) * 1000
            )
            return list(client.zrangebyscore(key, now_ms, "+inf"))
        finally:
            client.close()

    def child_pids(self) -> list[int]:
        """The worker processes (children of ``taskiq worker``), read from /proc."""
        parent = self.proc.pid if self.proc else 0
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                # "pid (comm) state ppid ...": comm may contain spaces, so split after ')'.
                if int(stat.read_text().rpartition(")")[2].split()[1]) == parent:
                    children.append(int(stat.parent.name))
        return sorted(children)

    def wait_ready(self, count: int | None = None, timeout: float = 30.0) -> None:
        """Wait until the workers have registered (they do that once subscribed)."""
        want = self.workers if count is None else count
        deadline = time.monotonic() + timeout
        while len(self.live_workers()) < want:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early; log: {self.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers not ready; log: {self.log.read_text()[-3000:]}")
            time.sleep(0.05)  # polling the registry the workers write; no event to block on

    def stop(self, graceful: bool = False, timeout: float = 10.0) -> None:
        """SIGKILL the whole process group; ``graceful`` tries SIGTERM first."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        if graceful:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)  # children that hang on shutdown (taskiq-redis)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout)
        self.proc = None

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture
def worker_factory(redis_url: str, prefix: str) -> Iterator[type[WorkerProcess]]:
    started: list[WorkerProcess] = []

    class Factory(WorkerProcess):
        def __init__(self, **kwargs: object) -> None:
            super().__init__(redis_url, prefix, **kwargs)  # type: ignore[arg-type]
            started.append(self)

    yield Factory
    for worker in started:
        worker.stop()
