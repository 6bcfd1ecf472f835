"""Settings for every sight-core component, loaded once from the environment or code.

``SightSettings()`` reads variables prefixed ``SIGHT_`` with ``__`` between nesting levels
(``SIGHT_DATABASE__POOL_SIZE=10``) and an optional ``.env`` file. The Gemini key is also read
from ``GOOGLE_API_KEY``. A bad value raises :class:`~sight_core.errors.ConfigurationError`
naming the variable, the (redacted) value and what is accepted. A ``SIGHT_*`` variable that
names no setting (``SIGHT_DATABASE_URL``, ``SIGHT_CACHE__TTL``) is ignored with an
:class:`UnknownSettingWarning` naming the closest real variable. URLs are checked by the
drivers' own parsers (SQLAlchemy's ``make_url``, redis-py's ``parse_url``), so every URL the
driver accepts loads: unix sockets, IPv6 hosts, TLS options in the query string.

Services whose environment already holds ``DATABASE_URL``, ``REDIS_URL``, ``NEO4J_URI`` or
``GOOGLE_API_KEY`` opt in to reading them with a subclass that sets
:attr:`SightSettings.env_aliases` (:data:`PLATFORM_ENV_ALIASES` is that mapping).

Pool presets are data: each part has a ``preset`` name (``api``, ``worker``, ``pgbouncer``,
``test``, ``serverless``) and optional fields that override the preset one by one.
``resolved()`` returns the effective pool configuration. Passwords, DSNs and API keys are
secrets: no ``repr``, ``str``, log line or error message shows them.
"""

from __future__ import annotations

import difflib
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from sight_core.errors import ConfigurationError

__all__ = [
    "DATABASE_PRESETS",
    "NEO4J_PRESETS",
    "PLATFORM_ENV_ALIASES",
    "REDIS_PRESETS",
    "CacheSettings",
    "DatabasePool",
    "DatabaseSettings",
    "LLMSettings",
    "ModelPrice",
    "PriceTier",
    "QuotaLimit",
    "Neo4jPool",
    "Neo4jSettings",
    "ObservabilitySettings",
    "RedisPool",
    "RedisSettings",
    "SecretUrl",
    "SightSettings",
    "UnknownSettingWarning",
    "redact_url",
]

_P = TypeVar("_P")


_SECRET_QUERY = re.compile(r"(?i)(^|[&?])(password|passwd|pass|api_key|token)=[^&]*")
# "scheme://user:" then everything up to the LAST "@": a password pasted without
# percent-encoding may hold @ : / # ? (the drivers and urllib split such URLs differently),
# so the mask errs on the side of hiding too much rather than a piece of the password.
_USERINFO_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\[\]]*:)[^\n]*@")


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (``scheme://user:***@host/db``).

    The rest is kept exactly as written (``[::1]`` keeps its brackets, ``unix:///path`` its
    empty authority); a ``password=`` (or ``token=``, ``api_key=``) query parameter is masked
    too. A password with unencoded ``@ : / # ?`` is masked whole, up to the last ``@``.
    """
    masked = _USERINFO_PASSWORD.sub(r"\1***@", url, count=1)
    return _SECRET_QUERY.sub(r"\1\2=***", masked)


class SecretUrl(SecretStr):
    """A URL that may carry a password: shown with the password masked, never in full."""

    def _display(self) -> str:
        return redact_url(self.get_secret_value())

    @property
    def scheme(self) -> str:
        return urlsplit(self.get_secret_value()).scheme


_ENCODE_HINT = (
    " (a password holding @ : / # ? or % must be percent-encoded: "
    "urllib.parse.quote(password, safe=''))"
)


def _split(raw: str, example: str) -> None:
    """Reject what no URL parser accepts, naming the part: brackets, a non-numeric port."""
    try:
        _ = urlsplit(raw).port  # raises on a non-numeric port or unbalanced IPv6 brackets
    except ValueError as exc:
        # urllib's message quotes the "port", which is a piece of the password when the
        # password holds an unencoded / # or ?: name the problem without the text.
        what = "the port is not a number" if "Port" in str(exc) else "unbalanced [ ] in the host"
        raise ValueError(f"malformed URL: {what}{_ENCODE_HINT}; expected e.g. {example}") from None


_DATABASE_EXAMPLE = (
    "postgresql+asyncpg://user:password@host:5432/dbname, or for a unix socket "
    "postgresql+asyncpg://user:password@/dbname?host=/cloudsql/PROJECT:REGION:INSTANCE"
)
_DATABASE_DRIVERS = ("postgresql+asyncpg", "postgresql", "postgres")


def _check_database_url(value: SecretUrl) -> SecretUrl:
    """Parse with SQLAlchemy's ``make_url``: what the engine will read is what is checked."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    raw = value.get_secret_value()
    _split(raw, _DATABASE_EXAMPLE)
    try:
        url = make_url(raw)
    except ArgumentError as exc:
        raise ValueError(
            f"SQLAlchemy cannot parse it ({exc}){_ENCODE_HINT}; expected e.g. {_DATABASE_EXAMPLE}"
        ) from None
    except ValueError:  # int(port) quoting the text, which may be a piece of the password
        raise ValueError(
            f"SQLAlchemy reads a port that is not a number{_ENCODE_HINT}; "
            f"expected e.g. {_DATABASE_EXAMPLE}"
        ) from None
    if url.host and "@" in url.host:  # SQLAlchemy split an unencoded "@" of the password
        raise ValueError(
            f"SQLAlchemy reads a host holding '@'{_ENCODE_HINT}; expected e.g. {_DATABASE_EXAMPLE}"
        )
    if url.drivername not in _DATABASE_DRIVERS:
        raise ValueError(
            f"driver {url.drivername!r} is not PostgreSQL; use the scheme postgresql+asyncpg:// "
            "(postgresql:// and postgres:// are read as postgresql+asyncpg://)"
        )
    if not url.host and "host" not in url.query:
        raise ValueError(
            "no host: put host[:port] after the '@', or for a unix socket add "
            "?host=/path/to/socket/directory (Cloud SQL: ?host=/cloudsql/PROJECT:REGION:INSTANCE)"
        )
    if not url.database:
        raise ValueError(f"no database name after the host; expected e.g. {_DATABASE_EXAMPLE}")
    return value


_REDIS_EXAMPLE = (
    "redis://:password@host:6379/0, rediss://host:6380/0?ssl_ca_certs=/path/ca.pem "
    "or unix:///path/redis.sock?db=0"
)


def _check_redis_url(value: SecretUrl) -> SecretUrl:
    """Parse with redis-py's ``parse_url``, the function ``Redis.from_url`` uses."""
    from redis.connection import parse_url

    raw = value.get_secret_value()
    _split(raw, _REDIS_EXAMPLE)
    try:
        options: dict[str, Any] = parse_url(raw)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        message = str(exc)
        if message.startswith("invalid literal"):  # int(db) quoting the path, maybe a password
            message = f"the database number after the host is not an integer{_ENCODE_HINT}"
        raise ValueError(f"{message}; expected e.g. {_REDIS_EXAMPLE}") from None
    if raw.startswith("unix:") and not options.get("path"):
        raise ValueError(f"no socket path after unix://; expected e.g. {_REDIS_EXAMPLE}")
    return value


_NEO4J_SCHEMES = ("bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc")


def _check_url(raw: str, schemes: tuple[str, ...], example: str) -> None:
    _split(raw, example)
    parts = urlsplit(raw)
    if parts.scheme not in schemes:
        shown = repr(parts.scheme) if parts.scheme else "no scheme"
        raise ValueError(f"{shown} is not one of {', '.join(schemes)}; expected e.g. {example}")
    if not parts.hostname:
        raise ValueError(f"no host; expected e.g. {example}")


# --------------------------------------------------------------------------------------------
# Pool presets (data)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DatabasePool:
    """Effective SQLAlchemy + asyncpg pool configuration."""

    pool_size: int
    max_overflow: int
    pool_timeout: float
    pool_recycle: int
    pool_pre_ping: bool
    pool_use_lifo: bool
    command_timeout: float
    statement_cache_size: int | None
    pgbouncer: bool
    connect_timeout: float
    """asyncpg's connect deadline (TCP + startup + auth); asyncpg's own default is 60 s."""
    statement_timeout: float
    """Server-side ``statement_timeout`` in seconds; 0 = not sent (the server's setting)."""
    idle_in_transaction_session_timeout: float
    """Server-side ``idle_in_transaction_session_timeout`` in seconds; 0 = not sent."""


@dataclass(frozen=True, slots=True)
class RedisPool:
    """Effective redis-py ``BlockingConnectionPool`` configuration."""

    max_connections: int
    pool_timeout: float
    socket_connect_timeout: float
    socket_timeout: float
    health_check_interval: int
    retries: int
    socket_keepalive: bool = True
    """TCP keepalive on every connection: NAT gateways and managed Redis (Upstash, Memorystore)
    drop idle flows silently; keepalive makes the kernel notice instead of the next command."""
    backoff_base: float = 0.01
    """First wait of the jittered exponential backoff between ``retries``, seconds."""
    backoff_cap: float = 0.1
    """Longest wait between ``retries``, seconds."""


@dataclass(frozen=True, slots=True)
class Neo4jPool:
    """Effective Neo4j driver pool configuration."""

    max_connection_pool_size: int
    connection_acquisition_timeout: float
    max_connection_lifetime: float
    liveness_check_timeout: float | None
    connection_timeout: float
    max_transaction_retry_time: float
    """How long the driver retries a failed managed transaction (its default is 30 s)."""
    operation_timeout: float
    """Deadline of one ``GraphClient`` read/write/batch chunk, retries included."""


# ``pool_recycle`` stays under the 30-60 min idle cut-offs of typical load balancers and PgBouncer.
# Server-side timeouts: a statement the client gave up on (or whose client died) stops on the
# server too, and a transaction left open by a crashed handler releases its locks. PgBouncer
# rejects unknown startup parameters, so that preset sends neither (set them on the role).
DATABASE_PRESETS: Mapping[str, DatabasePool] = {
    "api": DatabasePool(5, 15, 10.0, 1800, True, True, 30.0, None, False, 5.0, 30.0, 60.0),
    "worker": DatabasePool(2, 8, 30.0, 1800, True, True, 300.0, None, False, 10.0, 300.0, 600.0),
    "pgbouncer": DatabasePool(5, 15, 10.0, 1800, True, True, 30.0, 0, True, 5.0, 0.0, 0.0),
    "test": DatabasePool(2, 8, 10.0, -1, False, False, 30.0, None, False, 5.0, 30.0, 60.0),
    # Cloud Run jobs and other short-lived, many-instance processes: one connection each,
    # recycled after 5 minutes so a scaled-out fleet never pins Cloud SQL's connection slots.
    "serverless": DatabasePool(
        pool_size=1,
        max_overflow=0,
        pool_timeout=30.0,
        pool_recycle=300,
        pool_pre_ping=True,
        pool_use_lifo=False,
        command_timeout=300.0,
        statement_cache_size=None,
        pgbouncer=False,
        connect_timeout=10.0,
        statement_timeout=300.0,
        idle_in_transaction_session_timeout=300.0,
    ),
}
REDIS_PRESETS: Mapping[str, RedisPool] = {
    "api": RedisPool(50, 1.0, 1.0, 1.0, 30, 1),
    "worker": RedisPool(20, 5.0, 2.0, 5.0, 30, 2),
    "test": RedisPool(100, 2.0, 1.0, 2.0, 0, 0),
    "serverless": RedisPool(
        max_connections=4,
        pool_timeout=5.0,
        socket_connect_timeout=2.0,
        socket_timeout=5.0,
        health_check_interval=30,
        retries=2,
    ),
}
# A read or write against a refused or hung server ends within ``operation_timeout``: the
# driver alone retries for ``max_transaction_retry_time`` and waits forever on a connection
# that stopped answering mid-query.
NEO4J_PRESETS: Mapping[str, Neo4jPool] = {
    "api": Neo4jPool(20, 5.0, 1800.0, 60.0, 5.0, 2.0, 5.0),
    "worker": Neo4jPool(10, 30.0, 1800.0, 60.0, 10.0, 30.0, 300.0),
    "test": Neo4jPool(10, 5.0, 600.0, None, 2.0, 1.0, 10.0),
    "serverless": Neo4jPool(
        max_connection_pool_size=2,
        connection_acquisition_timeout=30.0,
        max_connection_lifetime=300.0,
        liveness_check_timeout=60.0,
        connection_timeout=10.0,
        max_transaction_retry_time=15.0,
        operation_timeout=60.0,
    ),
}


def _resolve(presets: Mapping[str, _P], name: str, overrides: BaseModel) -> _P:
    base = presets[name]
    changes = {
        f.name: getattr(overrides, f.name)
        for f in fields(base)  # type: ignore[arg-type]
        if getattr(overrides, f.name, None) is not None
    }
    return replace(base, **changes)  # type: ignore[type-var]


def _check_preset(value: str, presets: Mapping[str, object]) -> str:
    if value not in presets:
        raise ValueError(f"unknown preset; accepted: {', '.join(presets)}")
    return value


class _Part(BaseModel):
    # hide_input_in_errors: a rejected URL must not be echoed whole (it holds the password)
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class DatabaseSettings(_Part):
    """PostgreSQL through SQLAlchemy async + asyncpg. ``SIGHT_DATABASE__*``."""

    url: SecretUrl = SecretUrl("postgresql+asyncpg://postgres@127.0.0.1:5432/sight")
    preset: str = "api"
    application_name: str = "sight"
    workers: int = Field(1, ge=1, description="worker processes sharing the server")
    echo: bool = False
    pool_size: int | None = Field(None, ge=1)
    max_overflow: int | None = Field(None, ge=0)
    pool_timeout: float | None = Field(None, gt=0)
    pool_recycle: int | None = Field(None, ge=-1)
    pool_pre_ping: bool | None = None
    pool_use_lifo: bool | None = None
    command_timeout: float | None = Field(None, gt=0)
    statement_cache_size: int | None = Field(None, ge=0)
    pgbouncer: bool | None = None
    connect_timeout: float | None = Field(None, gt=0, description="seconds to connect")
    statement_timeout: float | None = Field(None, ge=0, description="server-side; 0 = not sent")
    idle_in_transaction_session_timeout: float | None = Field(
        None, ge=0, description="server-side; 0 = not sent"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: SecretUrl) -> SecretUrl:
        return _check_database_url(v)

    @field_validator("preset")
    @classmethod
    def _preset(cls, v: str) -> str:
        return _check_preset(v, DATABASE_PRESETS)

    def resolved(self) -> DatabasePool:
        """The preset with this object's non-``None`` fields applied on top."""
        return _resolve(DATABASE_PRESETS, self.preset, self)


_REDIS_TLS_FIELDS = ("ssl_ca_certs", "ssl_ca_data", "ssl_cert_reqs", "ssl_check_hostname")


def _check_address(value: str) -> tuple[str, int]:
    """``(host, port)`` of ``host:port`` (``[v6]:port`` for IPv6)."""
    host, sep, port = value.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not host:port (e.g. 10.0.0.5:26379)")
    return host, int(port)


RedisMode = Literal["standalone", "sentinel", "cluster"]


class RedisSettings(_Part):
    """Redis through redis-py asyncio. ``SIGHT_REDIS__*``.

    ``mode`` picks the topology :func:`~sight_core.cache.create_redis_client` builds:

    - ``standalone`` (default): one server at ``url``.
    - ``sentinel``: the primary named ``sentinel_master`` that the ``sentinels``
      (``host:port`` each) point at; failovers are followed. ``url`` still gives the scheme,
      password and database for the data nodes (its host is not used);
      ``sentinel_password`` is for the sentinels themselves, if they need one.
    - ``cluster``: a Redis Cluster (or Valkey cluster) reached through ``url`` and any
      ``cluster_nodes`` (``host:port`` each, more startup nodes); database 0 only.
    """

    url: SecretUrl = SecretUrl("redis://127.0.0.1:6379/0")
    mode: RedisMode = "standalone"
    # ``| str``: the environment may give a comma-separated list (JSON lists work too)
    sentinels: list[str] | str = Field(
        default_factory=list, description="sentinel host:port list (mode=sentinel)"
    )
    sentinel_master: str | None = Field(None, description="monitored primary name (sentinel)")
    sentinel_password: SecretStr | None = None
    cluster_nodes: list[str] | str = Field(
        default_factory=list, description="more startup nodes, host:port (mode=cluster)"
    )
    preset: str = "api"
    max_connections: int | None = Field(None, ge=1)
    pool_timeout: float | None = Field(None, gt=0)
    socket_connect_timeout: float | None = Field(None, gt=0)
    socket_timeout: float | None = Field(None, gt=0)
    health_check_interval: int | None = Field(None, ge=0)
    retries: int | None = Field(None, ge=0)
    socket_keepalive: bool | None = None
    backoff_base: float | None = Field(None, ge=0)
    backoff_cap: float | None = Field(None, ge=0)
    ssl_ca_certs: str | None = Field(None, description="CA bundle file for rediss:// (Upstash)")
    ssl_ca_data: str | None = Field(None, description="CA certificates as PEM text")
    ssl_cert_reqs: Literal["required", "optional", "none"] | None = None
    ssl_check_hostname: bool | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: SecretUrl) -> SecretUrl:
        return _check_redis_url(v)

    @field_validator("sentinels", "cluster_nodes", mode="before")
    @classmethod
    def _addresses(cls, v: Any) -> Any:
        if isinstance(v, str):  # SIGHT_REDIS__SENTINELS=h1:26379,h2:26379 (or a JSON list)
            if v.lstrip().startswith("["):
                import json

                try:
                    v = json.loads(v)
                except ValueError:
                    raise ValueError(f"{v!r} is not a JSON list of host:port") from None
            else:
                v = [part for part in v.split(",") if part.strip()]
        if isinstance(v, list | tuple):
            for item in v:
                if not isinstance(item, str):
                    raise ValueError(f"{item!r} is not host:port (e.g. 10.0.0.5:26379)")
                _check_address(item)
            return [item.strip() for item in v]
        return v

    @model_validator(mode="after")
    def _topology(self) -> RedisSettings:
        mode = self.mode
        if mode != "sentinel":
            given = [n for n in ("sentinels", "sentinel_master") if getattr(self, n)]
            if self.sentinel_password is not None:
                given.append("sentinel_password")
            if given:
                raise ValueError(
                    f"{', '.join(given)} apply to mode='sentinel' only (got mode={mode!r}); "
                    "set SIGHT_REDIS__MODE=sentinel or remove them"
                )
        elif not self.sentinels or not self.sentinel_master:
            missing = [n for n in ("sentinels", "sentinel_master") if not getattr(self, n)]
            raise ValueError(
                f"mode='sentinel' needs {' and '.join(missing)}: e.g. "
                "SIGHT_REDIS__SENTINELS=10.0.0.5:26379,10.0.0.6:26379 and "
                "SIGHT_REDIS__SENTINEL_MASTER=mymaster (the name in 'sentinel monitor')"
            )
        if mode != "cluster" and self.cluster_nodes:
            raise ValueError(
                f"cluster_nodes apply to mode='cluster' only (got mode={mode!r}); "
                "set SIGHT_REDIS__MODE=cluster or remove them"
            )
        if mode == "cluster":
            from redis.connection import parse_url

            if self.url.scheme == "unix":
                raise ValueError(
                    "mode='cluster' needs a TCP url (redis:// or rediss://), got unix://"
                )
            options: dict[str, Any] = parse_url(self.url.get_secret_value())  # type: ignore[no-untyped-call]
            if int(options.get("db") or 0) != 0:
                raise ValueError(
                    f"mode='cluster' has database 0 only, got /{options['db']} in url; "
                    "end the url with /0 or no path"
                )
        return self

    def addresses(self, field: Literal["sentinels", "cluster_nodes"]) -> list[tuple[str, int]]:
        """``(host, port)`` of each entry of ``sentinels`` or ``cluster_nodes``."""
        return [_check_address(item) for item in getattr(self, field)]

    @model_validator(mode="after")
    def _tls_needs_rediss(self) -> RedisSettings:
        tls = [name for name in _REDIS_TLS_FIELDS if getattr(self, name) is not None]
        if tls and self.url.scheme != "rediss":
            raise ValueError(
                f"{', '.join(tls)} apply to TLS connections only; use a rediss:// URL "
                f"(got {self.url.scheme}://)"
            )
        return self

    def tls_options(self) -> dict[str, Any]:
        """The ``ssl_*`` keyword arguments for redis-py that are set (empty without TLS)."""
        return {
            name: getattr(self, name)
            for name in _REDIS_TLS_FIELDS
            if getattr(self, name) is not None
        }

    @field_validator("preset")
    @classmethod
    def _preset(cls, v: str) -> str:
        return _check_preset(v, REDIS_PRESETS)

    def resolved(self) -> RedisPool:
        return _resolve(REDIS_PRESETS, self.preset, self)


class Neo4jSettings(_Part):
    """Neo4j (or FalkorDB over Bolt) through the official async driver. ``SIGHT_NEO4J__*``."""

    uri: str = "bolt://127.0.0.1:7687"
    user: str | None = None
    password: SecretStr | None = None
    database: str | None = None
    preset: str = "api"
    max_connection_pool_size: int | None = Field(None, ge=1)
    connection_acquisition_timeout: float | None = Field(None, gt=0)
    max_connection_lifetime: float | None = Field(None, gt=0)
    liveness_check_timeout: float | None = Field(None, ge=0)
    connection_timeout: float | None = Field(None, gt=0)
    max_transaction_retry_time: float | None = Field(None, ge=0)
    operation_timeout: float | None = Field(None, gt=0)

    @field_validator("uri")
    @classmethod
    def _uri(cls, v: str) -> str:
        _check_url(v, _NEO4J_SCHEMES, "bolt://host:7687")
        return v

    @field_validator("preset")
    @classmethod
    def _preset(cls, v: str) -> str:
        return _check_preset(v, NEO4J_PRESETS)

    def resolved(self) -> Neo4jPool:
        return _resolve(NEO4J_PRESETS, self.preset, self)


class PriceTier(_Part):
    """USD per million tokens for calls whose prompt has more than ``above_input_tokens``."""

    above_input_tokens: int = Field(gt=0)
    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(None, ge=0)


class ModelPrice(_Part):
    """USD per million tokens; ``tiers`` replace all three rates for longer prompts (Gemini
    2.5 Pro bills a prompt over 200k tokens, and its answer, at a higher rate)."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(None, ge=0)
    tiers: tuple[PriceTier, ...] = ()

    def rates(self, input_tokens: int) -> PriceTier | ModelPrice:
        """The rates for a prompt of ``input_tokens``: the tier with the highest threshold
        below it, else the base rates."""
        best: PriceTier | None = None
        for tier in self.tiers:
            if input_tokens > tier.above_input_tokens and (
                best is None or tier.above_input_tokens > best.above_input_tokens
            ):
                best = tier
        return self if best is None else best


def _pro_price() -> ModelPrice:
    long_context = PriceTier(
        above_input_tokens=200_000, input=2.50, output=15.0, cached_input=0.625
    )
    return ModelPrice(input=1.25, output=10.0, cached_input=0.31, tiers=(long_context,))


def _default_prices() -> dict[str, ModelPrice]:
    return {
        "gemini-2.5-pro": _pro_price(),
        "gemini-2.5-flash": ModelPrice(input=0.30, output=2.50, cached_input=0.075),
        "gemini-2.5-flash-lite": ModelPrice(input=0.10, output=0.40, cached_input=0.025),
        "fake-flash": ModelPrice(input=0.30, output=2.50, cached_input=0.075),
        "fake-pro": _pro_price(),
        # embeddings bill input tokens only
        "gemini-embedding-001": ModelPrice(input=0.15, output=0.0),
        "fake-embedding": ModelPrice(input=0.15, output=0.0),
    }


def _price_key(name: str) -> str:
    """``models/Gemini-2.5-Pro`` → ``gemini-2.5-pro`` (how usage records name models)."""
    return name.strip().lower().rsplit("models/", 1)[-1]


class QuotaLimit(_Part):
    """One model's quota (``SIGHT_LLM__QUOTAS__<model>__RPM`` ...); ``None`` = not limited.

    ``rpm`` requests and ``tpm`` input tokens per minute (Gemini's "TPM" counts input tokens),
    ``output_tpm`` output tokens per minute, ``rpd`` requests per day (reset at midnight
    Pacific time). At least one must be set."""

    rpm: int | None = Field(None, gt=0)
    tpm: int | None = Field(None, gt=0, description="input tokens per minute")
    output_tpm: int | None = Field(None, gt=0)
    rpd: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _some_limit(self) -> QuotaLimit:
        if self.rpm is None and self.tpm is None and self.output_tpm is None and self.rpd is None:
            raise ValueError(
                "a quota needs at least one of RPM, TPM, OUTPUT_TPM, RPD "
                "(e.g. SIGHT_LLM__QUOTAS__GEMINI-2.5-FLASH__RPM=1000)"
            )
        return self


class LLMSettings(_Part):
    """Chat models. ``SIGHT_LLM__*``; the key also comes from ``GOOGLE_API_KEY``."""

    provider: Literal["google", "fake"] = "google"
    api_key: SecretStr | None = None
    base_url: str | None = None
    flash_model: str = "gemini-2.5-flash"
    pro_model: str = "gemini-2.5-pro"
    timeout: float = Field(60.0, gt=0, description="seconds per attempt")
    deadline: float = Field(180.0, gt=0, description="seconds for all attempts of one call")
    max_attempts: int = Field(8, ge=1, description="the deadline still bounds the call")
    backoff_initial: float = Field(1.0, ge=0)
    backoff_max: float = Field(20.0, ge=0)
    max_server_wait: float = Field(
        60.0, ge=0, description="longest Retry-After / retryDelay waited; longer: a cooldown"
    )
    quota_cooldown: float = Field(
        3600.0, gt=0, description="seconds a model rests after a per-day quota refusal"
    )
    flash_concurrency: int = Field(20, ge=1)
    pro_concurrency: int = Field(4, ge=1)
    breaker_failure_threshold: int = Field(5, ge=1)
    breaker_recovery_timeout: float = Field(30.0, gt=0)
    breaker_half_open_max_calls: int = Field(1, ge=1)
    fake_latency: float = Field(0.0, ge=0, description="seconds per call of the fake provider")
    embedding_model: str = "gemini-embedding-001"
    embedding_dimensions: int = Field(
        3072, ge=1, le=16_000, description="output_dimensionality asked of the embedding model"
    )
    embedding_batch_size: int = Field(
        100, ge=1, le=100, description="texts per embedding request (Gemini accepts 100)"
    )
    embedding_concurrency: int = Field(8, ge=1, description="embedding requests at once")
    prices: dict[str, ModelPrice] = Field(default_factory=_default_prices)
    quotas: dict[str, QuotaLimit] = Field(
        default_factory=dict, description="per model: RPM, TPM, OUTPUT_TPM, RPD (see QuotaLimit)"
    )
    quota_project: str = Field(
        "default",
        min_length=1,
        pattern=r"^[^{}:]+$",
        description="whose quota (Redis hash tag; no ':', '{' or '}')",
    )
    quota_workers: int = Field(
        1, ge=1, description="processes sharing the quota; each gets 1/n when Redis is down"
    )
    quota_window: float = Field(60.0, gt=0, description="seconds of the per-minute window")
    quota_margin: float = Field(
        1.0, ge=0, description="seconds added to the window for request arrival jitter"
    )
    quota_chars_per_token: float = Field(
        4.0, gt=0, description="prompt characters per token of the local input estimate"
    )
    quota_op_timeout: float = Field(
        1.0, gt=0, description="seconds a stalled quota round trip waits before the local share"
    )

    @field_validator("prices")
    @classmethod
    def _prices(cls, v: dict[str, ModelPrice]) -> dict[str, ModelPrice]:
        """User prices merge over the built-in table (adding one model keeps the others)."""
        return {**_default_prices(), **{_price_key(k): p for k, p in v.items()}}

    @field_validator("quotas")
    @classmethod
    def _quotas(cls, v: dict[str, QuotaLimit]) -> dict[str, QuotaLimit]:
        """Model names as usage records spell them (``models/Gemini-2.5-Pro`` is
        ``gemini-2.5-pro``)."""
        for name in v:
            if "{" in name or "}" in name or not name.strip():
                raise ValueError(f"quota model name {name!r}: must be non-empty, without {{ or }}")
        return {_price_key(k): q for k, q in v.items()}

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str | None) -> str | None:
        if v is not None:
            _check_url(v, ("http", "https"), "http://127.0.0.1:8080")
        return v


class CacheSettings(_Part):
    """The cache decorator. ``SIGHT_CACHE__*``."""

    prefix: str = Field("sight", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    default_ttl: float = Field(300.0, gt=0)
    op_timeout: float = Field(0.25, gt=0, description="deadline of one Redis operation")
    lock_ttl: float = Field(10.0, gt=0, description="stampede lock lease, extended while computing")
    breaker_threshold: int = Field(3, ge=1, description="consecutive Redis errors that open it")
    breaker_cooldown: float = Field(5.0, gt=0, description="seconds before Redis is probed again")
    local_tier: bool = False
    local_max_items: int = Field(1024, ge=1)
    local_ttl: float = Field(5.0, gt=0)
    compress_above: int | None = Field(None, ge=64, description="bytes; None = never compress")
    enabled: bool = True


class ObservabilitySettings(_Part):
    """Metrics and logging. ``SIGHT_OBSERVABILITY__*``."""

    service_name: str = "sight"
    prometheus: bool = False
    opentelemetry: bool = False
    log_context: bool = True
    slow_call_ms: float = Field(500.0, gt=0)


PLATFORM_ENV_ALIASES: Mapping[str, str] = {
    "DATABASE_URL": "SIGHT_DATABASE__URL",
    "REDIS_URL": "SIGHT_REDIS__URL",
    "NEO4J_URI": "SIGHT_NEO4J__URI",
    "GOOGLE_API_KEY": "SIGHT_LLM__API_KEY",
}
"""The Sight platform's Cloud Run variable names and the setting each one fills.

Opt in with a subclass: ``class Settings(SightSettings): env_aliases = PLATFORM_ENV_ALIASES``.
"""


class UnknownSettingWarning(UserWarning):
    """A ``SIGHT_*`` variable names no setting; it is ignored (the message names the closest)."""


class SightSettings(BaseSettings):
    """All settings of a service. Build once at startup: ``settings = SightSettings()``.

    Sources, strongest first: keyword arguments, ``SIGHT_*`` environment variables, the
    ``.env`` file, the variables named in :attr:`env_aliases`, then the defaults.

    Raises:
        ConfigurationError: a value is invalid; the message names the environment variable,
            the value (secrets redacted) and what is accepted.

    Warns:
        UnknownSettingWarning: a ``SIGHT_*`` variable (environment or ``.env``) names no
            setting, e.g. ``SIGHT_DATABASE_URL`` for ``SIGHT_DATABASE__URL``; it is ignored.
    """

    model_config = SettingsConfigDict(
        env_prefix="SIGHT_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
    )

    database: DatabaseSettings = DatabaseSettings()
    redis: RedisSettings = RedisSettings()
    neo4j: Neo4jSettings = Neo4jSettings()
    llm: LLMSettings = LLMSettings()
    cache: CacheSettings = CacheSettings()
    observability: ObservabilitySettings = ObservabilitySettings()

    env_aliases: ClassVar[Mapping[str, str]] = {}
    """Extra variable names read when the ``SIGHT_*`` variable they map to is not set:
    ``{"DATABASE_URL": "SIGHT_DATABASE__URL"}``. Empty by default (opt in by subclassing)."""

    _secret_fields: ClassVar[frozenset[str]] = frozenset({"url", "password", "api_key"})
    _reserved_prefixes: ClassVar[tuple[str, ...]] = ("SIGHT_TEST_",)

    def __init__(self, **values: Any) -> None:
        env_file = values.get("_env_file", self.model_config.get("env_file"))
        variables = _sight_variables(env_file)
        for name in sorted(variables):
            if not _known_variable(type(self), name):
                warnings.warn(_unknown_message(type(self), name), UnknownSettingWarning, 2)
        try:
            super().__init__(**values)
        except ValidationError as exc:
            aliases = {
                target.upper(): alias
                for alias, target in self.env_aliases.items()
                if alias in os.environ and target.upper() not in variables
            }
            raise ConfigurationError(_describe(exc, self._secret_fields, aliases)) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            _KnownFieldsOnly(settings_cls, env_settings),
            _KnownFieldsOnly(settings_cls, dotenv_settings),
            _AliasSource(settings_cls, cls.env_aliases),
            file_secret_settings,
        )

    @model_validator(mode="after")
    def _google_api_key(self) -> SightSettings:
        if self.llm.api_key is None:
            key = os.environ.get("GOOGLE_API_KEY")
            if key:
                object.__setattr__(
                    self, "llm", self.llm.model_copy(update={"api_key": SecretStr(key)})
                )
        return self

    def redacted(self) -> dict[str, Any]:
        """Effective configuration as plain data with every secret masked (for ``doctor``)."""
        data: dict[str, Any] = {}
        for name in type(self).model_fields:
            part = getattr(self, name)
            shown = {k: (str(v) if isinstance(v, SecretStr) else v) for k, v in part}
            if hasattr(part, "resolved"):
                resolved = part.resolved()
                shown["effective_pool"] = {
                    f.name: getattr(resolved, f.name) for f in fields(resolved)
                }
            data[name] = shown
        return data


def _sight_variables(env_file: Any) -> dict[str, str]:
    """``SIGHT_*`` names (upper-cased) set in the environment or the ``.env`` file(s)."""
    found = {k.upper(): v for k, v in os.environ.items() if k.upper().startswith("SIGHT_")}
    files = env_file if isinstance(env_file, list | tuple) else [env_file]
    for file in files:
        if file is not None and Path(file).is_file():
            from dotenv import dotenv_values

            for key, val in dotenv_values(file).items():
                if key.upper().startswith("SIGHT_"):
                    found.setdefault(key.upper(), val or "")
    return found


def _setting_names(settings_cls: type[BaseModel]) -> list[str]:
    """Every ``SIGHT_*`` variable that names a setting (parts and their fields)."""
    names = []
    for part, info in settings_cls.model_fields.items():
        names.append(f"SIGHT_{part.upper()}")
        model = info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            names += [f"SIGHT_{part.upper()}__{f.upper()}" for f in model.model_fields]
    return names


def _known_variable(settings_cls: type[SightSettings], name: str) -> bool:
    if name.startswith(settings_cls._reserved_prefixes):
        return True
    head, _, rest = name.partition("__")
    if head + ("__" + rest.partition("__")[0] if rest else "") not in _setting_names(settings_cls):
        return False
    if "__" in rest:  # deeper levels exist only under dict-valued fields (llm.prices)
        part = settings_cls.model_fields[head.removeprefix("SIGHT_").lower()].annotation
        assert isinstance(part, type) and issubclass(part, BaseModel)
        return _takes_mapping(part.model_fields[rest.partition("__")[0].lower()])
    return True


def _takes_mapping(field: Any) -> bool:
    """Whether a part's field is dict-valued, so variables may nest below it."""
    return getattr(field.annotation, "__origin__", None) is dict


def _unknown_message(settings_cls: type[SightSettings], name: str) -> str:
    close = difflib.get_close_matches(name, _setting_names(settings_cls), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    return (
        f"{name} is not a sight-core setting and is ignored{hint} "
        "(settings are SIGHT_<PART>__<FIELD>, two underscores between levels; see docs/settings.md)"
    )


class _KnownFieldsOnly(PydanticBaseSettingsSource):
    """Wraps the env/.env source, dropping fields no part has (they were warned about)."""

    def __init__(self, settings_cls: type[BaseSettings], inner: PydanticBaseSettingsSource):
        super().__init__(settings_cls)
        self._inner = inner

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._inner.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        data = self._inner()
        for part, value in data.items():
            info = self.settings_cls.model_fields.get(part)
            model = info.annotation if info is not None else None
            if isinstance(value, dict) and isinstance(model, type) and issubclass(model, BaseModel):
                data[part] = {
                    k: v
                    for k, v in value.items()
                    if k in model.model_fields
                    # SIGHT_PART__FIELD__X under a plain field: warned about, so ignored too
                    and (not isinstance(v, dict) or _takes_mapping(model.model_fields[k]))
                }
        return data


class _AliasSource(PydanticBaseSettingsSource):
    """Values of :attr:`SightSettings.env_aliases` variables, nested like ``SIGHT_*`` ones."""

    def __init__(self, settings_cls: type[BaseSettings], aliases: Mapping[str, str]):
        super().__init__(settings_cls)
        self._aliases = aliases

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for alias, target in self._aliases.items():
            value = os.environ.get(alias)
            if value is None:
                continue
            path = target.upper().removeprefix("SIGHT_").lower().split("__")
            node = data
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = value
        return data


def _describe(
    exc: ValidationError, secret_fields: frozenset[str], aliases: Mapping[str, str]
) -> str:
    lines = ["invalid sight-core settings:"]
    for error in exc.errors(include_url=False):
        loc = [str(part) for part in error["loc"]]
        variable = "SIGHT_" + "__".join(part.upper() for part in loc)
        if variable in aliases:
            variable = f"{aliases[variable]} (read as {variable})"
        value = error.get("input")
        if loc and loc[-1] in secret_fields and isinstance(value, str):
            shown = repr(redact_url(value)) if "://" in value else "'***'"
        elif isinstance(value, dict | list):
            shown = "<structure>"
        else:
            shown = repr(value)
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"  {variable}={shown} ({'.'.join(loc)}): {message}")
    return "\n".join(lines)
