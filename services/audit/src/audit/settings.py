"""Configuration of the audit service: the shared SPM_* variables and its own."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from spm_common.settings import Secret, ServiceAmqpUrl, ServiceDatabaseUrl, ServiceSettings

from audit import signing

MIGRATIONS = Path(__file__).parent / "migrations"
# The development-only checkpoint signing key: derived from a public text, so anyone can sign with it. It is
# the field's default, which production refuses (spm_common.settings' STRONG_SECRET).
DEVELOPMENT_CHECKPOINT_KEY = signing.b64(hashlib.sha256(b"development-only-audit-checkpoint-key").digest())


class Settings(ServiceSettings):
    service: str = "audit"
    audit_port: int = Field(default=8084, ge=1, le=65535)
    audit_database_url: ServiceDatabaseUrl = None
    # This service's own RabbitMQ user (see README, "Users, roles and permissions"); unset: SPM_AMQP_URL.
    audit_amqp_url: ServiceAmqpUrl = None
    # SPM_AUDIT_SECRET finds each person's own key (which makes their pseudonymous subject references, and
    # which erasure destroys), and made the references of entries older than those keys. Only audit holds it.
    audit_secret: Secret = SecretStr("development-only-audit-secret")
    # SPM_AUDIT_CHECKPOINT_KEY: base64 of the raw 32-byte Ed25519 private key that signs the checkpoints. It is
    # not in the database, so someone who can rewrite the database cannot sign a checkpoint of their own.
    audit_checkpoint_key: Secret = SecretStr(DEVELOPMENT_CHECKPOINT_KEY)
    # How often the head of the chain is verified, recorded as a signed checkpoint and logged.
    audit_checkpoint_seconds: float = Field(default=300.0, gt=0, le=86_400)
    # The trail appends one batch per transaction: bigger batches, fewer transactions.
    prefetch: int = Field(default=500, ge=1, le=5000)
    consumer_batch: int = Field(default=250, ge=1, le=1000)

    @field_validator("audit_checkpoint_key")
    @classmethod
    def _a_real_signing_key(cls, value: SecretStr) -> SecretStr:
        try:
            signing.unb64(value.get_secret_value(), signing.KEY_BYTES)
        except ValueError:
            raise ValueError(
                "must be base64 of a raw 32-byte Ed25519 private key (spm-audit-admin checkpoints new-key)"
            ) from None
        return value

    def checkpoint_signer(self) -> signing.Signer:
        return signing.Signer(self.audit_checkpoint_key.get_secret_value())

    def subject_key(self) -> bytes:
        return self.audit_secret.get_secret_value().encode()
