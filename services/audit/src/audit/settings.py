"""Configuration of the audit service: the shared SPM_* variables and its own."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from spm_common.settings import ServiceSettings

from audit import signing

MIGRATIONS = Path(__file__).parent / "migrations"
DEVELOPMENT_SECRET = "development-only-audit-secret"  # noqa: S105 (refused outside development)
MIN_SECRET_LENGTH = 32
# The development-only checkpoint signing key: derived from a public text, so anyone can sign with it; refused
# outside development.
DEVELOPMENT_CHECKPOINT_KEY = signing.b64(hashlib.sha256(b"development-only-audit-checkpoint-key").digest())


class Settings(ServiceSettings):
    service: str = "audit"
    audit_port: int = Field(default=8084, ge=1, le=65535)
    audit_database_url: str | None = None
    # SPM_AUDIT_SECRET keys the pseudonymous subject references; only the audit service holds it.
    audit_secret: SecretStr = SecretStr(DEVELOPMENT_SECRET)
    # SPM_AUDIT_CHECKPOINT_KEY: base64 of the raw 32-byte Ed25519 private key that signs the checkpoints. It is
    # not in the database, so someone who can rewrite the database cannot sign a checkpoint of their own.
    audit_checkpoint_key: SecretStr = SecretStr(DEVELOPMENT_CHECKPOINT_KEY)
    # How often the head of the chain is verified, recorded as a signed checkpoint and logged.
    audit_checkpoint_seconds: float = Field(default=300.0, gt=0, le=86_400)
    # The trail appends one batch per transaction: bigger batches, fewer transactions.
    prefetch: int = Field(default=500, ge=1, le=5000)
    consumer_batch: int = Field(default=250, ge=1, le=1000)

    @field_validator("audit_secret")
    @classmethod
    def _real_secret_outside_development(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        if info.data.get("environment", "development") != "development":
            secret = value.get_secret_value()
            if secret == DEVELOPMENT_SECRET or len(secret) < MIN_SECRET_LENGTH:
                raise ValueError(f"set a random secret of at least {MIN_SECRET_LENGTH} characters")
        return value

    @field_validator("audit_checkpoint_key")
    @classmethod
    def _a_real_signing_key(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        text = value.get_secret_value()
        try:
            signing.unb64(text, signing.KEY_BYTES)
        except ValueError:
            raise ValueError(
                "must be base64 of a raw 32-byte Ed25519 private key (spm-audit-admin checkpoints new-key)"
            ) from None
        if info.data.get("environment", "development") != "development" and text == DEVELOPMENT_CHECKPOINT_KEY:
            raise ValueError("set a key of your own (spm-audit-admin checkpoints new-key)")
        return value

    def checkpoint_signer(self) -> signing.Signer:
        return signing.Signer(self.audit_checkpoint_key.get_secret_value())

    def subject_key(self) -> bytes:
        return self.audit_secret.get_secret_value().encode()
