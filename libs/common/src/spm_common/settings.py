"""Configuration from SPM_* environment variables (CONTRACT section 1), one class per service over this base."""

from __future__ import annotations

import sys
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICES = ("contact", "orders", "notifier", "audit")
# What .env.example puts where a secret goes: a value still holding it was never set, so it is refused.
PLACEHOLDER = "change-me"


class CommonSettings(BaseSettings):
    """Variables that mean the same thing in every service."""

    model_config = SettingsConfigDict(env_prefix="SPM_", extra="ignore", frozen=True)

    database_url: str = "postgresql://postgres@127.0.0.1:5432/spm"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    exchange: str = Field(default="spm.events", min_length=1, max_length=200)
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=1025, ge=1, le=65535)
    mail_from: str = "SPM Group <no-reply@spmgroup.vn>"
    operator_token: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    http_host: str = "127.0.0.1"
    # Outside development, a service refuses the development-only defaults of its secrets.
    environment: Literal["development", "production"] = "development"
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # A failing message is retried this many times in all, each after the delay, then dead-lettered.
    max_attempts: int = Field(default=5, ge=1, le=50)
    retry_delay_ms: int = Field(default=5000, ge=10, le=3_600_000)
    # Bigger bounds cost nothing at a low rate, and under a backlog mean fewer, larger transactions
    # (bench.orders' 100,000-purchaser fan-out: 131 s with 100/50, 118 s with 400/200; Postgres 608 -> 460 µs of
    # CPU a purchaser).
    prefetch: int = Field(default=400, ge=1, le=5000)
    # Messages written in one consumer transaction at most; must not exceed the prefetch.
    consumer_batch: int = Field(default=200, ge=1, le=1000)
    # How long a batch that is not full waits for more before it is written: an event's latency grows by as much,
    # and at a steady rate the transactions get fewer and larger (bench.orders at 1,000 orders/s: 20 ms took the
    # CPU an order of the whole system from 1,980 to 1,666 µs and the e-mail's p50 latency from 445 to 116 ms).
    consumer_linger_ms: int = Field(default=20, ge=0, le=1000)
    outbox_batch: int = Field(default=200, ge=1, le=5000)
    outbox_poll_seconds: float = Field(default=2.0, gt=0, le=60)
    # Published outbox rows are kept this long for inspection, then deleted within the hour (at 1,000 orders/s a
    # day of the orders' two events an order is ~170 million rows, ~140 GB).
    outbox_retention_hours: float = Field(default=24.0, ge=0, le=24 * 90)

    @field_validator("operator_token", "webhook_secret", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # `SPM_OPERATOR_TOKEN=` (as compose passes an unset variable) must refuse everyone, not accept "".
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _no_placeholder(cls, value: Any) -> Any:
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(text, str) and PLACEHOLDER in text:
            raise ValueError(f"still holds the {PLACEHOLDER!r} placeholder of .env.example; set a real value")
        return value


class ServiceSettings(CommonSettings):
    """The base every service's settings class extends; `service` names the schema, role and queues."""

    service: str = ""
    db_pool_min: int = Field(default=1, ge=0, le=100)
    db_pool_max: int = Field(default=10, ge=1, le=200)
    # Longest a statement of the pool may take. It also bounds the wait on a connection that died without
    # being closed (a half-open TCP connection): the statement fails, the connection is dropped and the
    # loop that ran it tries again, instead of waiting for an answer that never comes.
    db_command_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)

    @property
    def db_schema(self) -> str:
        return self.service

    @property
    def role(self) -> str:
        return f"spm_{self.service}"

    @property
    def port(self) -> int:
        """SPM_<SERVICE>_PORT, declared by each service's settings class."""
        value = getattr(self, f"{self.service}_port", None)
        if not isinstance(value, int):
            raise AttributeError(f"{type(self).__name__} has no {self.service}_port field")
        return value

    @property
    def source(self) -> str:
        """The CloudEvents `source` of every event this service publishes."""
        return f"urn:spm:{self.service}"

    def role_amqp_url(self) -> str:
        """SPM_<SERVICE>_AMQP_URL where set (the service's own RabbitMQ user, limited to its own queues and
        routing keys), else SPM_AMQP_URL."""
        own = getattr(self, f"{self.service}_amqp_url", None)
        return own if isinstance(own, str) and own else self.amqp_url

    def has_own_database_url(self) -> bool:
        """Whether SPM_<SERVICE>_DATABASE_URL is set: the service then holds its login's credentials only."""
        own = getattr(self, f"{self.service}_database_url", None)
        return isinstance(own, str) and bool(own)

    def role_database_url(self) -> str:
        """SPM_<SERVICE>_DATABASE_URL where a service declares and sets it, else SPM_DATABASE_URL's
        database reached as the service's own role (spm_<service>), which can use its schema only."""
        own = getattr(self, f"{self.service}_database_url", None)
        if isinstance(own, str) and own:
            return own
        return with_user(self.database_url, self.role)


def with_user(url: str, user: str, password: str | None = None) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:{password}@{host}" if password else f"{user}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/") or "postgres"


S = TypeVar("S", bound=BaseSettings)


def load(cls: type[S]) -> S:
    """Read settings or exit at once naming each bad variable (never its value: it may be a secret)."""
    try:
        return cls()
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        lines = [f"invalid configuration for {cls.__name__}:"]
        for error in exc.errors():
            name = (prefix + "_".join(str(part) for part in error["loc"])).upper()
            lines.append(f"  {name}: {error['msg']}")
        print("\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None
