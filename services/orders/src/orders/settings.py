"""Configuration of the orders service: the shared SPM_* variables and its own."""

from pathlib import Path

from pydantic import Field
from spm_common.settings import ServiceSettings

MIGRATIONS = Path(__file__).parent / "migrations"


class Settings(ServiceSettings):
    service: str = "orders"
    orders_port: int = Field(default=8082, ge=1, le=65535)
    orders_database_url: str | None = None
