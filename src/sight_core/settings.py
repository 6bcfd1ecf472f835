"""Settings for every sight-core component, loaded once from the environment or code.

``SightSettings()`` reads variables prefixed ``SIGHT_`` with ``__`` between nesting levels
(``SIGHT_DATABASE__POOL_SIZE=10``) and an optional ``.env`` file. The Gemini key is also read
from ``GOOGLE_API_KEY``. A bad value raises :class:`~sight_core.errors.ConfigurationError`
naming the variable, the (redacted) value and what is accepted.

Pool presets are data: each part has a ``preset`` name (``api``, ``worker``, ``pgbouncer``,
``test``) and optional fields that override the preset one by one. ``resolved()`` returns the
effective pool configuration. Passwords, DSNs and API keys are secrets: no ``repr``, ``str``,
log line or error message shows them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from sight_core.errors import ConfigurationError

__all__ = [
    "DATABASE_PRESETS",
    "NEO4J_PRESETS",
    "REDIS_PRESETS",
    "CacheSettings",
    "DatabasePool",
    "DatabaseSettings",
    "LLMSettings",
    "ModelPrice",
    "Neo4jPool",
    "Neo4jSettings",
    "ObservabilitySettings",
    "RedisPool",
    "RedisSettings",
    "SecretUrl",
    "SightSettings",
    "redact_url",
]

_P = TypeVar("_P")


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (``scheme://user:***@host/db``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class SecretUrl(SecretStr):
    """A URL that may carry a password: shown with the password masked, never in full."""

    def _display(self) -> str:
        return redact_url(self.get_secret_value())

    @property
    def scheme(self) -> str:
        return urlsplit(self.get_secret_value()).scheme


def _check_url(value: SecretUrl, schemes: tuple[str, ...], example: str) -> SecretUrl:
    raw = value.get_secret_value()
    try:
        parts = urlsplit(raw)
        _ = parts.port  # raises on a non-numeric port
    except ValueError as exc:
        raise ValueError(f"malformed URL ({exc}); expected e.g. {example}") from None
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"expected a URL with scheme {' or '.join(schemes)}, e.g. {example}")
    return value


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


@dataclass(frozen=True, slots=True)
class RedisPool:
    """Effective redis-py ``BlockingConnectionPool`` configuration."""

    max_connections: int
    pool_timeout: float
    socket_connect_timeout: float
    socket_timeout: float
    health_check_interval: int
    retries: int


@dataclass(frozen=True, slots=True)
class Neo4jPool:
    """Effective Neo4j driver pool configuration."""

    max_connection_pool_size: int
    connection_acquisition_timeout: float
    max_connection_lifetime: float
    liveness_check_timeout: float | None
    connection_timeout: float


# ``pool_recycle`` stays under the 30-60 min idle cut-offs of typical load balancers and PgBouncer.
DATABASE_PRESETS: Mapping[str, DatabasePool] = {
    "api": DatabasePool(5, 15, 10.0, 1800, True, True, 30.0, None, False),
    "worker": DatabasePool(2, 8, 30.0, 1800, True, True, 300.0, None, False),
    "pgbouncer": DatabasePool(5, 15, 10.0, 1800, True, True, 30.0, 0, True),
    "test": DatabasePool(2, 8, 10.0, -1, False, False, 30.0, None, False),
}
REDIS_PRESETS: Mapping[str, RedisPool] = {
    "api": RedisPool(50, 1.0, 1.0, 1.0, 30, 1),
    "worker": RedisPool(20, 5.0, 2.0, 5.0, 30, 2),
    "test": RedisPool(100, 2.0, 1.0, 2.0, 0, 0),
}
NEO4J_PRESETS: Mapping[str, Neo4jPool] = {
    "api": Neo4jPool(20, 5.0, 1800.0, 60.0, 5.0),
    "worker": Neo4jPool(10, 30.0, 1800.0, 60.0, 10.0),
    "test": Neo4jPool(10, 5.0, 600.0, None, 2.0),
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
    model_config = ConfigDict(extra="forbid", frozen=True)


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

    @field_validator("url")
    @classmethod
    def _url(cls, v: SecretUrl) -> SecretUrl:
        return _check_url(
            v,
            ("postgresql+asyncpg", "postgresql", "postgres"),
            "postgresql+asyncpg://user:password@host:5432/dbname",
        )

    @field_validator("preset")
    @classmethod
    def _preset(cls, v: str) -> str:
        return _check_preset(v, DATABASE_PRESETS)

    def resolved(self) -> DatabasePool:
        """The preset with this object's non-``None`` fields applied on top."""
        return _resolve(DATABASE_PRESETS, self.preset, self)


class RedisSettings(_Part):
    """Redis through redis-py asyncio. ``SIGHT_REDIS__*``."""

    url: SecretUrl = SecretUrl("redis://127.0.0.1:6379/0")
    preset: str = "api"
    max_connections: int | None = Field(None, ge=1)
    pool_timeout: float | None = Field(None, gt=0)
    socket_connect_timeout: float | None = Field(None, gt=0)
    socket_timeout: float | None = Field(None, gt=0)
    health_check_interval: int | None = Field(None, ge=0)
    retries: int | None = Field(None, ge=0)

    @field_validator("url")
    @classmethod
    def _url(cls, v: SecretUrl) -> SecretUrl:
        return _check_url(v, ("redis", "rediss", "unix"), "redis://:password@host:6379/0")

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

    @field_validator("uri")
    @classmethod
    def _uri(cls, v: str) -> str:
        _check_url(
            SecretUrl(v),
            ("bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc"),
            "bolt://host:7687",
        )
        return v

    @field_validator("preset")
    @classmethod
    def _preset(cls, v: str) -> str:
        return _check_preset(v, NEO4J_PRESETS)

    def resolved(self) -> Neo4jPool:
        return _resolve(NEO4J_PRESETS, self.preset, self)


class ModelPrice(_Part):
    """USD per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(None, ge=0)


def _default_prices() -> dict[str, ModelPrice]:
    return {
        "gemini-2.5-pro": ModelPrice(input=1.25, output=10.0, cached_input=0.31),
        "gemini-2.5-flash": ModelPrice(input=0.30, output=2.50, cached_input=0.075),
        "gemini-2.5-flash-lite": ModelPrice(input=0.10, output=0.40, cached_input=0.025),
        "fake-flash": ModelPrice(input=0.30, output=2.50, cached_input=0.075),
        "fake-pro": ModelPrice(input=1.25, output=10.0, cached_input=0.31),
    }


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
    max_server_wait: float = Field(60.0, ge=0, description="cap on Retry-After / retryDelay")
    flash_concurrency: int = Field(20, ge=1)
    pro_concurrency: int = Field(4, ge=1)
    breaker_failure_threshold: int = Field(5, ge=1)
    breaker_recovery_timeout: float = Field(30.0, gt=0)
    breaker_half_open_max_calls: int = Field(1, ge=1)
    fake_latency: float = Field(0.0, ge=0, description="seconds per call of the fake provider")
    prices: dict[str, ModelPrice] = Field(default_factory=_default_prices)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str | None) -> str | None:
        if v is not None:
            _check_url(SecretUrl(v), ("http", "https"), "http://127.0.0.1:8080")
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


class SightSettings(BaseSettings):
    """All settings of a service. Build once at startup: ``settings = SightSettings()``.

    Raises:
        ConfigurationError: a value is invalid; the message names the environment variable,
            the value (secrets redacted) and what is accepted.
    """

    model_config = SettingsConfigDict(
        env_prefix="SIGHT_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    database: DatabaseSettings = DatabaseSettings()
    redis: RedisSettings = RedisSettings()
    neo4j: Neo4jSettings = Neo4jSettings()
    llm: LLMSettings = LLMSettings()
    cache: CacheSettings = CacheSettings()
    observability: ObservabilitySettings = ObservabilitySettings()

    _secret_fields: ClassVar[frozenset[str]] = frozenset({"url", "password", "api_key"})

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigurationError(_describe(exc, self._secret_fields)) from None

    @model_validator(mode="after")
    def _google_api_key(self) -> SightSettings:
        if self.llm.api_key is None:
            import os

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


def _describe(exc: ValidationError, secret_fields: frozenset[str]) -> str:
    lines = ["invalid sight-core settings:"]
    for error in exc.errors(include_url=False):
        loc = [str(part) for part in error["loc"]]
        variable = "SIGHT_" + "__".join(part.upper() for part in loc)
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
