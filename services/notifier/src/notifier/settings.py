"""Configuration of the notifier service: the shared SPM_* variables and its own."""

from email.utils import parseaddr
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr
from spm_common.publishers import amqp_login
from spm_common.settings import (
    HTTPS_URL,
    STRONG_OWN_URL,
    TLS_UNLESS_LOCAL_SMTP,
    InProduction,
    Secret,
    ServiceDatabaseUrl,
    ServiceSettings,
)

from notifier.policy import Publishers

MIGRATIONS = Path(__file__).parent / "migrations"


def own_notifier_user(settings: Any, _: str) -> str | None:  # Any: as every InProduction check is typed
    """The notifier logs in as a notifier user of its own: a shared login cannot tell which service published
    a mail request (notifier.policy.Publishers)."""
    if Publishers(amqp_login(settings.role_amqp_url()), production=True).prefix is None:
        return (
            "production needs SPM_NOTIFIER_AMQP_URL logging in as the notifier's own RabbitMQ user"
            " (spm_notifier, made by spm-admin bootstrap): a shared login cannot tell who published a mail request"
        )
    return None


class Settings(ServiceSettings):
    service: str = "notifier"
    notifier_port: int = Field(default=8083, ge=1, le=65535)
    notifier_database_url: ServiceDatabaseUrl = None
    # This service's own RabbitMQ user (see README, "Users, roles and permissions"); unset: SPM_AMQP_URL.
    notifier_amqp_url: Annotated[str | None, STRONG_OWN_URL, InProduction(own_notifier_user)] = None
    # Keys the pseudonymous recipient references and the unsubscribe tokens. Set it in production.
    notifier_secret: Secret = SecretStr("development-only-notifier-secret")
    # Where recipients reach this service from the outside: the base of the unsubscribe links (https in production).
    notifier_public_url: Annotated[str, HTTPS_URL] = "http://127.0.0.1:8083"
    # The mailbox of the `mailto:` unsubscribe link; default unsubscribe@<domain of SPM_MAIL_FROM>.
    notifier_unsubscribe_mailbox: str | None = None

    # How the notifier talks to its SMTP server (SPM_SMTP_HOST / SPM_SMTP_PORT are the shared variables).
    # Production refuses "none" to any host but this machine.
    smtp_security: Annotated[Literal["none", "starttls", "tls"], TLS_UNLESS_LOCAL_SMTP] = "none"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    smtp_validate_certs: bool = True
    # Persistent SMTP connections kept open in parallel, and the most messages per second handed over (0: no limit).
    # Each e-mail is four round trips to the server: with 8 connections the e-mails of 200 orders a second queued
    # for seconds (bench.pipeline's half speed: p99 2.6 s; 32 connections: 0.2 s). Lower it for a relay that
    # limits connections per client (Postfix's default limit is 50).
    notifier_smtp_connections: int = Field(default=32, ge=1, le=64)
    notifier_rate_limit: float = Field(default=0.0, ge=0)

    # Deliveries claimed per round trip; a claim is a lease that another sender may take over once it expires.
    notifier_batch_size: int = Field(default=200, ge=1, le=5000)
    notifier_lease_seconds: float = Field(default=120.0, ge=0.5, le=3600)
    # Results of sending are committed together at most this often: the crash window of a sent e-mail.
    notifier_commit_interval_seconds: float = Field(default=0.02, ge=0.001, le=1)
    notifier_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    # Temporary failures: exponential backoff with jitter, from base to max, then failed after so many attempts.
    notifier_retry_base_seconds: float = Field(default=30.0, gt=0)
    notifier_retry_max_seconds: float = Field(default=3600.0, gt=0)
    notifier_max_attempts: int = Field(default=10, ge=1, le=100)
    # /readyz answers 503 once the SMTP server has refused every attempt (authentication, TLS, connection) this
    # long; it is ready again as soon as the server accepts one (a probe tries every few seconds meanwhile).
    notifier_smtp_unready_seconds: float = Field(default=60.0, gt=0, le=86400)
    # A failed delivery keeps what it needs to be retried by an operator this long, then only its log remains.
    notifier_failed_retention_days: float = Field(default=7.0, ge=0)

    def publishers(self) -> Publishers:
        """Which RabbitMQ user may publish a request in a service's name, as this notifier logs in."""
        return Publishers(amqp_login(self.role_amqp_url()), production=self.environment == "production")

    def recipient_key(self) -> bytes:
        return self.notifier_secret.get_secret_value().encode()

    @property
    def sender_address(self) -> str:
        """The bare address of SPM_MAIL_FROM: the SMTP envelope sender."""
        return parseaddr(self.mail_from)[1]

    @property
    def unsubscribe_mailbox(self) -> str:
        if self.notifier_unsubscribe_mailbox:
            return self.notifier_unsubscribe_mailbox
        domain = self.sender_address.rsplit("@", 1)[-1] or "localhost"
        return f"unsubscribe@{domain}"
