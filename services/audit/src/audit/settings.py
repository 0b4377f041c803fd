"""Configuration of the audit service: the shared SPM_* variables and its own."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, IPvAnyNetwork, SecretStr, ValidationInfo, field_validator
from pydantic_settings import NoDecode
from spm_common.settings import ServiceSettings

MIGRATIONS = Path(__file__).parent / "migrations"
DEVELOPMENT_SECRET = "development-only-audit-secret"  # noqa: S105 (refused outside development)
MIN_SECRET_LENGTH = 32


class Settings(ServiceSettings):
    service: str = "audit"
    audit_port: int = Field(default=8084, ge=1, le=65535)
    audit_database_url: str | None = None
    # This service's own RabbitMQ user (see README, "Users, roles and permissions"); unset: SPM_AMQP_URL.
    audit_amqp_url: str | None = None
    # SPM_AUDIT_SECRET keys the pseudonymous subject references; only the audit service holds it.
    audit_secret: SecretStr = SecretStr(DEVELOPMENT_SECRET)
    # SPM_TRUSTED_PROXIES: comma-separated CIDRs whose X-Forwarded-For is believed (empty: none is).
    trusted_proxies: Annotated[list[IPvAnyNetwork], NoDecode] = Field(default_factory=list)
    # How often the head of the chain is verified, recorded as a checkpoint and logged.
    audit_checkpoint_seconds: float = Field(default=300.0, gt=0, le=86_400)
    # The trail appends one batch per transaction: bigger batches, fewer transactions.
    prefetch: int = Field(default=500, ge=1, le=5000)
    consumer_batch: int = Field(default=250, ge=1, le=1000)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("audit_secret")
    @classmethod
    def _real_secret_outside_development(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        if info.data.get("environment", "development") != "development":
            secret = value.get_secret_value()
            if secret == DEVELOPMENT_SECRET or len(secret) < MIN_SECRET_LENGTH:
                raise ValueError(f"set a random secret of at least {MIN_SECRET_LENGTH} characters")
        return value

    def subject_key(self) -> bytes:
        return self.audit_secret.get_secret_value().encode()
