"""Adversarial checks of the issue-14 adoption changes: settings URLs, secrets, Redis retries.

Each test is a scenario that tried to make the adoption code return a wrong result, show a
password or retry more than it says; the ones that found a bug failed on the code before its fix.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from sight_core.cache import create_redis_client
from sight_core.errors import ConfigurationError
from sight_core.settings import RedisSettings, SightSettings, UnknownSettingWarning, redact_url
from sight_core.testing import FaultProxy
from sight_core.testing.servers import free_port

SECRET = "Zq7-secret"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("SIGHT_") and not name.startswith("SIGHT_TEST_"):
            monkeypatch.delenv(name)
    for alias in ("DATABASE_URL", "REDIS_URL", "NEO4J_URI", "GOOGLE_API_KEY"):
        monkeypatch.delenv(alias, raising=False)
    monkeypatch.chdir(tmp_path)


# Passwords written without percent-encoding, as people paste them: every character that
# ends a URL part (@ : / # ? %) somewhere in the password. Some of these URLs are refused
# (the drivers read them differently), some load; none may show any piece of the password.
_RAW_PASSWORDS = [
    f"{SECRET}#tail",
    f"{SECRET}?tail",
    f"{SECRET}/tail",
    f"{SECRET}:tail",
    f"{SECRET}@tail",
    f"ab#{SECRET}",
    f"ab?{SECRET}",
    f"ab/{SECRET}",
    f"ab:{SECRET}",
    f"ab@{SECRET}",
    f"a%zz{SECRET}",
]
_FRAGMENTS = (SECRET, "tail", "ab")


def _shown(part: str, url: str) -> str:
    """Everything a service could print about settings built from ``url``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            settings = SightSettings(**{part: {"url": url}})
    except ConfigurationError as exc:
        return str(exc) + repr(exc)
    return repr(settings) + str(settings) + str(settings.redacted())


@pytest.mark.parametrize("password", _RAW_PASSWORDS)
@pytest.mark.parametrize(
    ("part", "template"),
    [
        ("database", "postgresql+asyncpg://sight:{}@db.internal:5432/sight_db"),
        ("database", "postgresql+asyncpg://sight:{}@/sight_db?host=/cloudsql/P:R:I"),
        ("redis", "redis://default:{}@cache.internal:6379/0"),
        ("redis", "rediss://default:{}@[::1]:6380/0"),
    ],
)
def test_no_piece_of_an_unencoded_password_is_ever_shown(
    part: str, template: str, password: str
) -> None:
    url = template.format(password)
    shown = _shown(part, url) + redact_url(url)
    assert SECRET not in shown, shown
    # fragments of the password either side of the special character
    for piece in _FRAGMENTS:
        if piece in password:
            assert f":{piece}" not in shown and f"'{piece}'" not in shown, shown


def test_redact_url_keeps_an_empty_authority() -> None:
    """Masking a query password keeps ``unix:///path`` as written (not ``unix:/path``)."""
    url = f"unix:///run/redis.sock?db=0&password={SECRET}"
    assert redact_url(url) == "unix:///run/redis.sock?db=0&password=***"


def test_percent_encoded_password_loads_and_is_masked() -> None:
    from urllib.parse import quote

    encoded = quote(f"p@ss:w/rd#?%{SECRET}", safe="")
    settings = SightSettings(
        database={"url": f"postgresql+asyncpg://sight:{encoded}@/db?host=/cloudsql/P:R:I"},
        redis={"url": f"redis://default:{encoded}@[::1]:6379/0"},
    )
    shown = repr(settings) + str(settings.redacted())
    assert SECRET not in shown and encoded not in shown
    assert "[::1]:6379" in shown


# -- redis-py retries: one Retry applied at two nested levels ---------------------------------


@pytest.mark.parametrize("retries", [0, 2])
async def test_a_refused_upstream_is_tried_retries_plus_one_times(retries: int) -> None:
    """The proxy accepts and closes at once (its upstream refuses): the client's connect
    attempts are counted by the proxy. ``retries`` means retries, not ``(retries + 1) ** 2``."""
    with FaultProxy(free_port()) as proxy:
        url = proxy.url_for("redis://127.0.0.1:1/0")
        client = create_redis_client(RedisSettings(url=url, retries=retries, backoff_cap=0.01))
        try:
            with pytest.raises(RedisConnectionError):
                await client.ping()
        finally:
            await client.aclose()
        assert proxy.accepted == retries + 1


@pytest.mark.parametrize("retries", [0, 2])
async def test_a_server_lost_after_connecting_is_tried_retries_plus_one_times(
    redis_url: str, retries: int
) -> None:
    """A pooled connection whose server went away: the command and its reconnects together
    try ``retries + 1`` connections, whatever the health-check interval."""
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    with FaultProxy(port) as proxy:
        settings = RedisSettings(
            url=proxy.url_for(redis_url), retries=retries, backoff_cap=0.01, preset="api"
        )
        client = create_redis_client(settings)
        try:
            assert await client.ping()
            before = proxy.accepted
            proxy.upstream_port = free_port()  # the server is gone: new connections close
            proxy.reset()
            with pytest.raises(RedisConnectionError):
                await client.ping()
            attempts = proxy.accepted - before
        finally:
            await client.aclose()
    assert attempts <= retries + 1


# -- the docs runner: a wrong example fails its page -------------------------------------------


def _docs_runner() -> str:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "test_docs_examples.py"
    spec = importlib.util.spec_from_file_location("_docs_examples_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    runner: str = module.RUNNER
    return runner


def test_the_docs_runner_fails_a_page_whose_example_is_wrong(tmp_path: Path) -> None:
    """A copy of docs/settings.md whose example claims the password is shown fails, at the
    mutated block's line; the runner does not swallow an assertion of a page."""
    from sight_core._demo import server_environment

    page = Path(__file__).resolve().parents[2] / "docs" / "settings.md"
    right = 'assert "sight:***@/sight_db" in str(settings.database.url)'
    text = page.read_text(encoding="utf-8")
    assert text.count(right) == 1
    copy = tmp_path / "settings.md"
    copy.write_text(text.replace(right, right.replace("***", "s3cret")), encoding="utf-8")
    env = {name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ}
    env.update(server_environment(SightSettings(_env_file=None)))
    done = subprocess.run(
        [sys.executable, "-c", _docs_runner(), str(copy)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "AssertionError" in done.stderr
    block_line = text[: text.index(right)].rfind("```python")
    assert f"{copy}:{text.count(chr(10), 0, block_line) + 2}" in done.stderr, done.stderr[-2000:]


# -- unknown SIGHT_* variables: warned about *and* ignored ------------------------------------


@pytest.mark.parametrize(
    "env",
    [
        {"SIGHT_DATABASE__POOL_SIZE__MAX": "9"},
        {"SIGHT_DATABASE__POOL_SIZE": "3", "SIGHT_DATABASE__POOL_SIZE__MAX": "9"},
        {"SIGHT_REDIS__URL__HOST": "cache"},
    ],
)
def test_a_variable_nested_under_a_plain_field_is_warned_about_and_ignored(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    """The warning says "ignored": the variable must not make loading fail instead."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.warns(UnknownSettingWarning, match="is not a sight-core setting and is ignored"):
        settings = SightSettings()
    expected = 3 if "SIGHT_DATABASE__POOL_SIZE" in env else None
    assert settings.database.pool_size == expected
    assert settings.redis.url.get_secret_value() == "redis://127.0.0.1:6379/0"


def test_a_dotenv_typo_in_lower_case_is_warned_about(monkeypatch: pytest.MonkeyPatch) -> None:
    Path(".env").write_text("sight_redis_url=redis://cache:6379/0\n", encoding="utf-8")
    with pytest.warns(UnknownSettingWarning, match="SIGHT_REDIS__URL"):
        settings = SightSettings()
    assert settings.redis.url.get_secret_value() == "redis://127.0.0.1:6379/0"


# -- sight-core servers: a closed terminal (SIGHUP) stops the servers too ------------------------


def _ignore_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _sight_core(*args: str, sigint_ignored: bool = False) -> subprocess.Popen[str]:
    """``sight-core *args`` from the repository root, in its own session, without SIGHT_*;
    ``sigint_ignored``: started the way a shell starts a background job (SIGINT ignored)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGHT_", "GOOGLE_API_KEY"))}
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "sight-core"), *args],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=_ignore_sigint if sigint_ignored else None,
    )


@pytest.mark.slow
@pytest.mark.parametrize("sigint_ignored", [False, True])
def test_servers_stop_when_the_terminal_closes(sigint_ignored: bool) -> None:
    """SIGHUP (terminal closed, ssh dropped) is treated like SIGTERM: no server process and
    no server directory is left behind."""
    import signal

    import psutil

    command = _sight_core("servers", sigint_ignored=sigint_ignored)
    assert command.stdout is not None
    try:
        for line in command.stdout:
            if line.startswith("#"):
                break
        children = [
            c for c in psutil.Process(command.pid).children(recursive=True) if c.is_running()
        ]
        directories = set()
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                cwd = Path(child.cwd())
                directories |= {p for p in (cwd, *cwd.parents) if p.name.startswith("sight-")}
        assert len(directories) == 3  # PostgreSQL, Redis, Bolt
        command.send_signal(signal.SIGHUP)
        rest = command.stdout.read()
        code = command.wait(60)
    finally:
        if command.poll() is None:
            os.killpg(command.pid, signal.SIGKILL)
            command.wait()
        command.stdout.close()
    _gone, alive = psutil.wait_procs(children, timeout=10)
    for process in alive:  # the test failed: still leave nothing behind
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    assert alive == []
    assert [d for d in directories if d.exists()] == []
    assert (code, rest.strip()) == (130, "interrupted")


# -- sight-core doctor for a service that reads the platform's variable names ------------------


def test_doctor_checks_the_servers_named_by_platform_aliases(
    postgres_url: str, redis_url: str
) -> None:
    """A service whose environment holds only DATABASE_URL and REDIS_URL (item 5) checks those
    servers, not the 127.0.0.1 defaults, and the password stays masked."""
    from urllib.parse import urlsplit

    sight_core = Path(sys.executable).parent / "sight-core"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGHT_", "GOOGLE_API_KEY"))}
    env |= {"DATABASE_URL": postgres_url, "REDIS_URL": redis_url}
    done = subprocess.run(
        [str(sight_core), "doctor", "--platform-aliases", "--skip", "neo4j,llm", "--timeout", "10"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr
    assert done.stdout.count("  ok    ") == 2  # postgres, redis
    password = urlsplit(postgres_url).password
    if password:
        assert password not in done.stdout + done.stderr


# -- sight-core demo: SIGTERM while the servers start leaves nothing ---------------------------


@pytest.mark.slow
def test_demo_sigterm_while_the_servers_start_leaves_nothing() -> None:
    """SIGTERM lands while PostgreSQL and Redis are starting (a start is deferred, then its
    server stopped): every process the demo started is gone, and every server directory."""
    import signal
    import threading
    import time

    import psutil

    demo = _sight_core("demo", "--personas", "3", "--latency", "0.2")
    assert demo.stdout is not None
    seen: dict[int, psutil.Process] = {}
    directories: set[Path] = set()
    watching = threading.Event()
    watching.set()

    def watch() -> None:  # every descendant and its directory, as they appear
        while watching.is_set():
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(demo.pid).children(recursive=True):
                    seen.setdefault(child.pid, child)
                    with contextlib.suppress(psutil.Error):
                        cwd = Path(child.cwd())
                        directories.update(
                            p for p in (cwd, *cwd.parents) if p.name.startswith("sight-")
                        )
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        for line in demo.stdout:
            if "starting embedded" in line:
                break
        time.sleep(0.3)  # a server is starting
        demo.send_signal(signal.SIGTERM)
        rest = demo.stdout.read()
        code = demo.wait(60)
    finally:
        watching.clear()
        watcher.join()
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
        demo.stdout.close()
    assert seen, "no server had started: the signal came too early to test anything"
    _gone, alive = psutil.wait_procs(list(seen.values()), timeout=10)
    alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    assert alive == []
    assert [d for d in directories if d.exists()] == []
    assert code == 130
    assert [line for line in rest.splitlines() if not line.startswith("[")] == ["interrupted"]
