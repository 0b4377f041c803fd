"""Configuration of the audit service: the shared SPM_* variables and its own."""

from pathlib import Path

from pydantic import Field, SecretStr
from spm_common.settings import ServiceSettings

MIGRATIONS = Path(__file__).parent / "migrations"


class Settings(ServiceSettings):
    service: str = "audit"
    audit_port: int = Field(default=8084, ge=1, le=65535)
    audit_database_url: str | None = None
    # Keys the pseudonymous subject references; only the audit service holds it. Set it in production.
    audit_secret: SecretStr = SecretStr("development-only-audit-secret")

    def subject_key(self) -> bytes:
        return self.audit_secret.get_secret_value().encode()
