"""TLS for real (issue 8): ``rediss://`` with certificate checks on, against a redis-server
started with ``--tls-port`` and a CA the test makes, on one Redis and on a Redis Cluster. A
client that does not trust the server's CA gets a clear error. Also: the documented ACL rules
on a Cluster (in-process worker and aborter, like the TLS cases)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from taskiq import InMemoryBroker

from taskiq_abort import AbortBackendError, AbortMiddleware, AbortStatus
from taskiq_abort.backends.redis import RedisAbortBackend
from tests.support.redis_servers import ClusterServers, RedisServer, TLSFiles, make_tls_files

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_server(tls: TLSFiles) -> Iterator[RedisServer]:
    server = RedisServer(tls=tls)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


async def _abort_a_running_task(middleware: AbortMiddleware) -> None:
    """An in-process worker and aborter, both over TLS: the abort lands."""
    broker = InMemoryBroker().with_middlewares(middleware)
    started = asyncio.Event()

    @broker.task(task_name="tls_sleeper")
    async def sleeper() -> None:
        started.set()
        await asyncio.sleep(60)

    await broker.startup()
    try:
        task = await sleeper.kiq()
        await asyncio.wait_for(started.wait(), 30)
        outcome = await task.abort(reason="tls")
        assert outcome.status is AbortStatus.ABORTED
        queued_id = "never-sent-over-tls"
        assert (await middleware.abort(queued_id)).status is AbortStatus.REVOKED
    finally:
        await broker.shutdown()


async def test_standalone_over_tls(tls_server: RedisServer, prefix: str) -> None:
    assert tls_server.url.startswith("rediss://")
    mw = AbortMiddleware(tls_server.url, prefix=prefix, ssl_ca_certs=str(tls_server.tls.ca))
    await _abort_a_running_task(mw)


async def test_cluster_over_tls(tls: TLSFiles, prefix: str) -> None:
    cluster = ClusterServers(tls=tls).start()
    try:
        mw = AbortMiddleware(cluster.url, cluster=True, prefix=prefix, ssl_ca_certs=str(tls.ca))
        await _abort_a_running_task(mw)
    finally:
        cluster.cleanup()


async def test_a_wrong_ca_is_a_clear_error(tls_server: RedisServer, tmp_path: Path) -> None:
    other = make_tls_files(tmp_path, "other")
    backend = RedisAbortBackend(tls_server.url, ssl_ca_certs=str(other.ca), timeout=2)
    try:
        with pytest.raises(AbortBackendError, match="not signed by a CA this client trusts"):
            await backend.check()
        with pytest.raises(AbortBackendError, match="check ssl_ca_certs"):
            await backend.request("t1", None, "test")
    finally:
        await backend.close()


# --- ACL on a Cluster: the rules of docs/deploy.md, "ACL per topology" ---------------------
# docs/acl.md's worker rules, plus +pttl (the aborter's: this one user has both roles), plus
# the Cluster's additions.
CLUSTER_WORKER_RULES = (
    "on >{pw} resetkeys resetchannels ~{{{p}}}:* &{{{p}}}:ctl:* -@all "
    "+hello +auth +ping +evalsha +eval +script|load "
    "+exists +hget +hmget +hgetall +hkeys +hset +hsetnx +hdel +del +pexpire +time +set +pttl "
    "+zadd +zrem +zscore +zrangebyscore +smembers +srem +publish +subscribe +unsubscribe "
    "+wait +info +spublish +ssubscribe +sunsubscribe +cluster|slots +cluster|nodes +command"
)


async def test_cluster_with_the_documented_acl(redis_cluster, prefix: str) -> None:
    """docs/acl.md's worker rules plus ``+pttl`` and the Cluster's additions are enough to run
    a worker and abort from the same process (both roles) on a Cluster."""
    password = "cluster-acl-pw"
    user = f"abort-{prefix}"
    for node in redis_cluster.nodes:
        if node.proc is None:
            continue
        with node.client() as client:
            rules = CLUSTER_WORKER_RULES.format(pw=password, p=prefix).split()
            client.execute_command("ACL", "SETUSER", user, *rules)
    url = redis_cluster.url.replace("redis://", f"redis://{user}:{password}@")
    await _abort_a_running_task(AbortMiddleware(url, cluster=True, prefix=prefix))


async def test_sentinel_with_the_documented_acl(redis_sentinel, prefix: str) -> None:
    """docs/acl.md's worker rules plus ``+pttl +wait +info`` on the master (and its replica,
    which may be promoted: ACLs are not replicated) are enough on Sentinel."""
    password = "sentinel-acl-pw"
    user = f"abort-{prefix}"
    rules = CLUSTER_WORKER_RULES.split(" +spublish ")[0].format(pw=password, p=prefix)
    for server in (redis_sentinel.master, redis_sentinel.replica):
        with server.client() as client:
            client.execute_command("ACL", "SETUSER", user, *rules.split())
    middleware = AbortMiddleware(
        sentinels=redis_sentinel.addresses,
        master_name=redis_sentinel.master_name,
        prefix=prefix,
        username=user,
        password=password,
    )
    await _abort_a_running_task(middleware)
