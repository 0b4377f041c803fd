"""Configuration of the operators' console: the shared SPM_* variables and its own."""

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr
from spm_common.settings import STRONG_OWN_URL, Secret, ServiceAmqpUrl, ServiceDatabaseUrl, ServiceSettings

MIGRATIONS = Path(__file__).parent / "migrations"


class Settings(ServiceSettings):
    service: str = "console"
    console_port: int = Field(default=8080, ge=1, le=65535)
    console_database_url: ServiceDatabaseUrl = None
    # Its own RabbitMQ user (see README, "Users, roles and permissions"): it may publish operator.action only.
    console_amqp_url: ServiceAmqpUrl = None
    # Signs the session and CSRF cookies. Set it in production.
    console_secret: Secret = SecretStr("development-only-console-secret")
    # Where the console reaches the services' operator APIs (compose: http://contact:8081 and so on).
    console_contact_url: str = "http://127.0.0.1:8081"
    console_orders_url: str = "http://127.0.0.1:8082"
    console_audit_url: str = "http://127.0.0.1:8084"
    console_notifier_url: str = "http://127.0.0.1:8083"
    # The RabbitMQ management API with the read-only `spm_monitor` login (`http://spm_monitor:...@rabbitmq:15672`),
    # for the queues' depths on the system page; unset, the page says they are not configured.
    console_rabbitmq_monitor_url: Annotated[SecretStr | None, STRONG_OWN_URL] = None
    console_upstream_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # A session ends after this long without a request, and this long after the login whatever happens.
    console_idle_minutes: float = Field(default=30.0, gt=0, le=24 * 60)
    console_session_hours: float = Field(default=8.0, gt=0, le=7 * 24)
    # Wrong passwords allowed per account and per client address within the window; past it, 429.
    console_login_failures_per_account: int = Field(default=5, ge=1, le=1000)
    console_login_failures_per_client: int = Field(default=20, ge=1, le=10_000)
    console_login_window_seconds: int = Field(default=900, ge=1, le=86_400)
    # Messages a page of the inbox shows.
    console_page_size: int = Field(default=25, ge=1, le=200)

    @property
    def secure_cookies(self) -> bool:
        """Cookies only over HTTPS in production (behind its TLS proxy); plain HTTP works on a laptop."""
        return self.environment == "production"

    def signing_key(self) -> bytes:
        return self.console_secret.get_secret_value().encode()
