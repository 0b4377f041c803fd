"""Configuration of the contact service: the shared SPM_* variables and its own."""

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
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

    def client_key(self) -> bytes:
        return self.contact_secret.get_secret_value().encode()
