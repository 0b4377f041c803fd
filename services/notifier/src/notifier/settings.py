"""Configuration of the notifier service: the shared SPM_* variables and its own."""

from pathlib import Path

from pydantic import Field, SecretStr
from spm_common.settings import ServiceSettings

MIGRATIONS = Path(__file__).parent / "migrations"


class Settings(ServiceSettings):
    service: str = "notifier"
    notifier_port: int = Field(default=8083, ge=1, le=65535)
    notifier_database_url: str | None = None
    # Keys the pseudonymous recipient references of the delivery log. Set it in production.
    notifier_secret: SecretStr = SecretStr("development-only-notifier-secret")

    def recipient_key(self) -> bytes:
        return self.notifier_secret.get_secret_value().encode()
