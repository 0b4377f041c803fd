"""Configuration from SPM_* environment variables (CONTRACT section 1), one class per service over this base."""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Self, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import Field, IPvAnyNetwork, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# The services behind the events: each consumes from its own queue and answers privacy requests.
SERVICES = ("contact", "orders", "notifier", "audit")
# The operators' console is a service too (its own schema, role, outbox and process), but it consumes no event
# and holds no one's data: it joins the four wherever a schema, a role or a process is concerned (bootstrap,
# migrate, run, docs), and nowhere that is about queues or personal data.
CONSOLE = "console"
WITH_SCHEMA = (*SERVICES, CONSOLE)
# What .env.example puts where a secret goes: a value still holding it was never set, so it is refused.
PLACEHOLDER = "change-me"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/spm"
# Shortest secret, token or password production accepts, and the shortest operator token anywhere: 32
# random characters are beyond guessing, however many tries an attacker gets.
MIN_SECRET_LENGTH = 32
HOW_TO_MAKE_A_SECRET = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'  # noqa: S105 (a command, not a secret)
# The development-only defaults of the code and of docker-compose.yml all hold one of these.
DEVELOPMENT_MARKERS = ("development-only", "dev-only")
WEAK_IN_PRODUCTION = "weak_in_production"


@dataclass(frozen=True)
class InProduction:
    """Marks a setting (`Annotated[type, InProduction(check)]`) that SPM_ENVIRONMENT=production checks:
    `check(settings, field_name)` returns what is wrong with it, or None. The base class runs every marked
    field's check in one place, so a service only declares which of its settings are secrets."""

    check: Callable[[Any, str], str | None]


def _text(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value if isinstance(value, str) else ""


def _weak(secret: str, default: str, what: str) -> str | None:
    """Why `secret` is no production secret, or None. Never quotes it."""
    if not secret:
        return f"production needs {what}; it is unset"
    if secret == default or any(marker in secret for marker in DEVELOPMENT_MARKERS):
        return f"production refuses a development-only default; use {what}"
    if len(secret) < MIN_SECRET_LENGTH:
        return f"production needs {what}; this one is shorter"
    return None


def strong_secret(settings: Any, name: str) -> str | None:
    """A secret, token or password: set, not a development-only default, at least 32 characters."""
    return _weak(
        _text(getattr(settings, name)),
        _text(type(settings).model_fields[name].default),
        f"a random secret of at least {MIN_SECRET_LENGTH} characters",
    )


def _url_credentials(url: str, default_url: str) -> str | None:
    parts, default = urlsplit(url), urlsplit(default_url)
    if parts.username == "guest":
        return "production refuses the default user guest; create a user of its own"
    return _weak(
        unquote(parts.password or ""),
        unquote(default.password or ""),
        f"a password of at least {MIN_SECRET_LENGTH} random characters in this URL",
    )


def strong_url_credentials(settings: Any, name: str) -> str | None:
    """A URL that logs in (AMQP, Postgres): a strong password, and not the default user `guest`."""
    return _url_credentials(_text(getattr(settings, name)), _text(type(settings).model_fields[name].default))


def strong_shared_amqp_url(settings: Any, name: str) -> str | None:
    """SPM_AMQP_URL, where it is used: a service given a user of its own (SPM_<SERVICE>_AMQP_URL) never logs in
    with it, so compose gives the services none."""
    if getattr(settings, f"{getattr(settings, 'service', '')}_amqp_url", None):
        return None
    return strong_url_credentials(settings, name)


def strong_own_url(settings: Any, name: str) -> str | None:
    """A service's own login URL (SPM_<SERVICE>_AMQP_URL), where it is set: a strong password, not guest."""
    url = _text(getattr(settings, name))
    return _url_credentials(url, "") if url else None


def strong_broker_password(settings: Any, name: str) -> str | None:
    """A RabbitMQ user's password, where bootstrap makes the users (SPM_RABBITMQ_MANAGEMENT_URL)."""
    if getattr(settings, "rabbitmq_management_url", None) is None:
        return None
    return strong_secret(settings, name)


def strong_role_database_url(settings: Any, _: str) -> str | None:
    """The URL a service reaches Postgres with: unset, it is SPM_DATABASE_URL's without a password."""
    return _url_credentials(settings.role_database_url(), "")


def https_url(settings: Any, name: str) -> str | None:
    if urlsplit(_text(getattr(settings, name))).scheme != "https":
        return "production needs an https:// URL"
    return None


def is_local_host(host: str) -> bool:
    """This machine: localhost, 127.0.0.0/8 or ::1."""
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tls_unless_local_smtp(settings: Any, name: str) -> str | None:
    """SMTP without TLS only to this machine: anywhere else, e-mail (and any SMTP password) crosses the
    network in clear."""
    if getattr(settings, name) == "none" and not is_local_host(settings.smtp_host):
        return "production refuses SMTP without TLS (none) to a host other than this machine; use starttls or tls"
    return None


# The markers the settings classes declare their fields with.
STRONG_SECRET = InProduction(strong_secret)
STRONG_URL_CREDENTIALS = InProduction(strong_url_credentials)
STRONG_ROLE_DATABASE_URL = InProduction(strong_role_database_url)
STRONG_SHARED_AMQP_URL = InProduction(strong_shared_amqp_url)
STRONG_OWN_URL = InProduction(strong_own_url)
STRONG_BROKER_PASSWORD = InProduction(strong_broker_password)
HTTPS_URL = InProduction(https_url)
TLS_UNLESS_LOCAL_SMTP = InProduction(tls_unless_local_smtp)
# A service's secret key with a development-only default, and its own database URL.
Secret = Annotated[SecretStr, STRONG_SECRET]
ServiceDatabaseUrl = Annotated[str | None, STRONG_ROLE_DATABASE_URL]
# A service's own RabbitMQ user (see README, "Users, roles and permissions"); unset: SPM_AMQP_URL's.
ServiceAmqpUrl = Annotated[str | None, STRONG_OWN_URL]


class SpmSettings(BaseSettings):
    """The base of every settings class: SPM_* variables, an empty one taken as unset (compose passes
    `${VAR:-}` as ""), no `change-me` placeholder, and in production no weak secret (see `InProduction`)."""

    model_config = SettingsConfigDict(
        env_prefix="SPM_", extra="ignore", frozen=True, env_ignore_empty=True, hide_input_in_errors=True
    )

    # Production refuses the development-only defaults and every weak secret, token or password.
    environment: Literal["development", "production"] = "development"

    @field_validator("*", mode="after")
    @classmethod
    def _no_placeholder(cls, value: Any) -> Any:
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(text, str) and PLACEHOLDER in text:
            raise ValueError(f"still holds the {PLACEHOLDER!r} placeholder of .env.example; set a real value")
        return value

    @model_validator(mode="after")
    def _strong_in_production(self) -> Self:
        if self.environment != "production":
            return self
        problems = [
            InitErrorDetails(type=PydanticCustomError(WEAK_IN_PRODUCTION, reason), loc=(name,), input=name)
            for name, field in type(self).model_fields.items()
            for marker in field.metadata
            if isinstance(marker, InProduction) and (reason := marker.check(self, name))
        ]
        if problems:
            raise ValidationError.from_exception_data(type(self).__name__, problems)
        return self


class CommonSettings(SpmSettings):
    """Variables that mean the same thing in every service."""

    database_url: str = DEFAULT_DATABASE_URL
    amqp_url: Annotated[str, STRONG_SHARED_AMQP_URL] = "amqp://guest:guest@127.0.0.1:5672/"
    exchange: str = Field(default="spm.events", min_length=1, max_length=200)
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=1025, ge=1, le=65535)
    mail_from: str = "SPM Group <no-reply@spmgroup.vn>"
    # Unset, the operator endpoints refuse everyone; set, it is at least 32 characters in every environment.
    operator_token: Annotated[SecretStr | None, STRONG_SECRET] = None
    # Only the orders service (its webhook) needs it, so only its settings require it in production.
    webhook_secret: SecretStr | None = None
    # After this many wrong operator tokens from one client within the window, that client gets 429 (even
    # with the right token) until the window has passed.
    operator_auth_failures: int = Field(default=10, ge=1, le=10_000)
    operator_auth_window_seconds: float = Field(default=300.0, gt=0, le=86_400)
    http_host: str = "127.0.0.1"
    # SPM_TRUSTED_PROXIES: comma-separated CIDRs or addresses of the reverse proxies in front of the services,
    # whose X-Forwarded-For is believed (see spm_common.clientaddr). Empty: none is, the TCP peer is the client.
    trusted_proxies: Annotated[list[IPvAnyNetwork], NoDecode] = Field(default_factory=list)
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
    # Consumed event ids are kept this long, then purged with the published outbox rows. A copy of an event
    # delivered again after its id is gone would be handled twice, so this must outlast every way an event
    # comes back: the retries (SPM_MAX_ATTEMPTS x SPM_RETRY_DELAY_MS, two days at the very most), a redelivery
    # after a crash (minutes), and a replay from the dead-letter queue, where messages wait up to
    # SPM_DLQ_RETENTION_DAYS; hence longer than that (the validator below holds it so).
    inbox_retention_days: float = Field(default=30.0, gt=2, le=3650)
    # Dead letters older than this leave the `.dlq` queue for the `dead_letters_parked` table, personal data
    # masked, and are deleted from there once parked as long again (spm_common.retention).
    dlq_retention_days: float = Field(default=14.0, gt=0, le=3650)

    @model_validator(mode="after")
    def _inbox_outlasts_dead_letters(self) -> Self:
        if self.inbox_retention_days <= self.dlq_retention_days:
            reason = (
                "must be longer than SPM_DLQ_RETENTION_DAYS: a dead letter replayed after its event id left the"
                " inbox would be handled twice"
            )
            problem = InitErrorDetails(
                type=PydanticCustomError("inbox_retention", reason), loc=("inbox_retention_days",), input=None
            )
            raise ValidationError.from_exception_data(type(self).__name__, [problem])
        return self

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("operator_token", "webhook_secret", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        # A token of spaces is no token: unset, so the endpoints refuse everyone rather than accept "  ".
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("operator_token", mode="after")
    @classmethod
    def _long_operator_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_SECRET_LENGTH:
            raise ValueError(f"must be at least {MIN_SECRET_LENGTH} characters; make one with {HOW_TO_MAKE_A_SECRET}")
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


class BootstrapSettings(SpmSettings):
    """What `spm-admin bootstrap` (compose's `db-init`) reads: a connection allowed to create the database
    and the roles, and the password each service's role gets."""

    database_url: Annotated[str, STRONG_URL_CREDENTIALS] = DEFAULT_DATABASE_URL
    # Unset: the role has no password (for a server that trusts local logins; production refuses that).
    contact_db_password: Annotated[SecretStr | None, STRONG_SECRET] = None
    orders_db_password: Annotated[SecretStr | None, STRONG_SECRET] = None
    notifier_db_password: Annotated[SecretStr | None, STRONG_SECRET] = None
    audit_db_password: Annotated[SecretStr | None, STRONG_SECRET] = None
    console_db_password: Annotated[SecretStr | None, STRONG_SECRET] = None

    # The broker's vhost (the path of this URL) and exchange the RabbitMQ users and queues are made for; its
    # login, if it has one, declares the queues (else the management URL's administrator: `admin_amqp_url`).
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    exchange: str = Field(default="spm.events", min_length=1, max_length=200)
    # Set, bootstrap makes the RabbitMQ users through the management HTTP API with this URL's administrator
    # login, each with SPM_<WHO>_AMQP_PASSWORD (every one required then). Unset: no user is made.
    rabbitmq_management_url: Annotated[SecretStr | None, STRONG_OWN_URL] = None
    contact_amqp_password: Annotated[SecretStr | None, STRONG_BROKER_PASSWORD] = None
    orders_amqp_password: Annotated[SecretStr | None, STRONG_BROKER_PASSWORD] = None
    notifier_amqp_password: Annotated[SecretStr | None, STRONG_BROKER_PASSWORD] = None
    audit_amqp_password: Annotated[SecretStr | None, STRONG_BROKER_PASSWORD] = None
    console_amqp_password: Annotated[SecretStr | None, STRONG_BROKER_PASSWORD] = None
    shop_amqp_password: Annotated[SecretStr | None, STRONG_BROKER_PASSWORD] = None
    releases_amqp_password: Annotated[SecretStr | None, STRONG_BROKER_PASSWORD] = None
    logs_amqp_password: Annotated[SecretStr | None, STRONG_BROKER_PASSWORD] = None
    # spm_monitor: the console's look at the queues' depths through the management API (it may open an AMQP
    # connection, and do nothing with it).
    monitor_amqp_password: Annotated[SecretStr | None, STRONG_BROKER_PASSWORD] = None

    @model_validator(mode="after")
    def _every_broker_password_when_managed(self) -> Self:
        if self.rabbitmq_management_url is None:
            return self
        missing = [
            InitErrorDetails(
                type=PydanticCustomError("missing", "required where SPM_RABBITMQ_MANAGEMENT_URL asks for the users"),
                loc=(name,),
                input=name,
            )
            for name in type(self).model_fields
            if name.endswith("_amqp_password") and getattr(self, name) is None
        ]
        if missing:
            raise ValidationError.from_exception_data(type(self).__name__, missing)
        return self

    def role_passwords(self) -> dict[str, str | None]:
        passwords: dict[str, str | None] = {}
        for service in WITH_SCHEMA:
            password = getattr(self, f"{service}_db_password")
            passwords[service] = password.get_secret_value() if password is not None else None
        return passwords

    def broker_password(self, who: str) -> str:
        password: SecretStr | None = getattr(self, f"{who}_amqp_password")
        return password.get_secret_value() if password is not None else ""

    def admin_amqp_url(self) -> str:
        """The AMQP URL bootstrap declares the queues with: SPM_AMQP_URL as it is where it holds a login, else
        with the administrator's login of SPM_RABBITMQ_MANAGEMENT_URL (compose's db-init: one secret, not two)."""
        parts = urlsplit(self.amqp_url)
        if parts.username or self.rabbitmq_management_url is None:
            return self.amqp_url
        admin = urlsplit(self.rabbitmq_management_url.get_secret_value())
        login = f"{admin.username or ''}:{admin.password or ''}@"  # as the URL spells them: quoted already
        return urlunsplit(parts._replace(netloc=login + parts.netloc))


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


def from_environment(name: str, default: str) -> str:
    """A variable read outside a settings class (an admin command's SPM_LOG_FORMAT, the tests' SPM_TEST_*), by
    the classes' rule: empty is unset, so `NAME=` in a .env or compose's `${NAME:-}` gives the default."""
    return os.environ.get(name) or default


S = TypeVar("S", bound=BaseSettings)


def load(cls: type[S]) -> S:
    """Read settings or exit at once naming each bad variable (never its value: it may be a secret)."""
    try:
        return cls()
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        lines = [f"invalid configuration for {cls.__name__}:"]
        errors = exc.errors(include_input=False)
        for error in errors:
            name = (prefix + "_".join(str(part) for part in error["loc"])).upper()
            lines.append(f"  {name}: {error['msg']}")
        if any(error["type"] == WEAK_IN_PRODUCTION for error in errors):
            lines.append(f"(SPM_ENVIRONMENT is production; make a random secret with: {HOW_TO_MAKE_A_SECRET})")
        print("\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None
