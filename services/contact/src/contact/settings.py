"""Configuration of the contact service: the shared SPM_* variables and its own."""

from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode
from spm_common.settings import Secret, ServiceAmqpUrl, ServiceDatabaseUrl, ServiceSettings

MIGRATIONS = Path(__file__).parent / "migrations"
POLICIES = Path(__file__).parent / "policy"


class Settings(ServiceSettings):
    service: str = "contact"
    contact_port: int = Field(default=8081, ge=1, le=65535)
    contact_database_url: ServiceDatabaseUrl = None
    # This service's own RabbitMQ user (see README, "Users, roles and permissions"); unset: SPM_AMQP_URL.
    contact_amqp_url: ServiceAmqpUrl = None
    # Keys the hash of client addresses in the rate counters, so no address is ever stored. Set it in production.
    contact_secret: Secret = SecretStr("development-only-contact-secret")
    # Messages (and their replies) older than this are deleted by a periodic job.
    contact_retention_days: int = Field(default=365, ge=1, le=36500)
    contact_retention_interval_seconds: float = Field(default=3600.0, gt=0, le=86400)
    # Per client address, and for everyone together; fixed windows kept in Postgres (shared by replicas).
    contact_rate_per_client: int = Field(default=5, ge=1)
    contact_rate_client_window_seconds: int = Field(default=600, ge=1, le=86400)
    contact_rate_global: int = Field(default=600, ge=1)
    contact_rate_global_window_seconds: int = Field(default=60, ge=1, le=86400)
    # Look the e-mail domain up in DNS (MX or A record) before accepting a message; off means syntax only.
    contact_check_email_domain: bool = False
    # Where the outbox relay runs: in the service's process, or in a process of its own (`spm-contact-relay`),
    # which leaves the web process its whole core for the form (~20 % of its CPU under load was the relay's).
    contact_outbox_relay: Literal["in-process", "separate"] = "in-process"
    # The probes and metrics of that relay process.
    contact_relay_port: int = Field(default=8091, ge=1, le=65535)

    # Privacy requests (README "Privacy requests"). The public base URL of this service: the confirmation
    # link in the e-mail points there.
    contact_public_url: str = Field(default="http://127.0.0.1:8081", pattern=r"^https?://[^\s<>\"']+$")
    # How long a confirmation link works.
    privacy_confirm_hours: float = Field(default=24.0, gt=0, le=24 * 14)
    # The acknowledgement is due within this many working days (Monday to Friday, not a holiday) of receipt,
    # the answer within this many calendar days, and the one extension adds this many calendar days.
    privacy_ack_working_days: int = Field(default=2, ge=1, le=30)
    privacy_due_days: int = Field(default=15, ge=1, le=366)
    privacy_extension_days: int = Field(default=15, ge=1, le=366)
    # Public holidays that are not working days, ISO dates separated by commas: 2027-01-01,2027-02-16,...
    # (Unset rather than empty by default: compose passes an unset one as "", which means unset.)
    privacy_holidays: Annotated[tuple[date, ...] | None, NoDecode] = None
    # Requests per address and per client, each in a fixed window (seconds).
    privacy_rate_per_address: int = Field(default=3, ge=1)
    privacy_rate_address_window_seconds: int = Field(default=86400, ge=1, le=7 * 86400)
    privacy_rate_per_client: int = Field(default=10, ge=1)
    privacy_rate_client_window_seconds: int = Field(default=3600, ge=1, le=86400)

    @field_validator("privacy_holidays", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:  # raw input, before validation
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @property
    def holidays(self) -> frozenset[date]:
        return frozenset(self.privacy_holidays or ())

    def client_key(self) -> bytes:
        return self.contact_secret.get_secret_value().encode()
