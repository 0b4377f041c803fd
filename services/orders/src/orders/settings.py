"""Configuration of the orders service: the shared SPM_* variables and its own (SPM_ORDERS_*)."""

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr
from spm_common.settings import STRONG_SECRET, Secret, ServiceAmqpUrl, ServiceDatabaseUrl, ServiceSettings

MIGRATIONS = Path(__file__).parent / "migrations"


class Settings(ServiceSettings):
    service: str = "orders"
    orders_port: int = Field(default=8082, ge=1, le=65535)
    orders_database_url: ServiceDatabaseUrl = None
    # This service's own RabbitMQ user (see README, "Users, roles and permissions"); unset: SPM_AMQP_URL.
    orders_amqp_url: ServiceAmqpUrl = None
    # Keys the hashes that rate limits are stored under (never an address). Set it in production.
    orders_secret: Secret = SecretStr("development-only-orders-secret")
    # The order webhook's HMAC key (shared by every service's settings, but only this one uses it, so only
    # this one needs it strong in production). Unset, the webhook refuses every call.
    webhook_secret: Annotated[SecretStr | None, STRONG_SECRET] = None
    # The CloudEvents source the shop uses on the exchange: an order that arrives through the webhook
    # counts as coming from it, so the same order sent both ways is recorded once.
    orders_webhook_source: str = Field(default="urn:spm:shop", min_length=1, max_length=500)
    orders_webhook_tolerance_seconds: int = Field(default=300, ge=1, le=3600)
    # The privacy-policy version consent is recorded under when an order does not say which one it saw.
    orders_policy_version: int = Field(default=1, ge=1)
    # Purchasers per fan-out transaction (upgrade notices, news).
    orders_fanout_batch: int = Field(default=1000, ge=1, le=10_000)
    orders_fanout_poll_seconds: float = Field(default=5.0, gt=0, le=300)
    # License recovery: requests per client and per address in each window; the floor on its answer time.
    orders_recovery_per_client: int = Field(default=10, ge=1)
    orders_recovery_per_email: int = Field(default=3, ge=1)
    orders_recovery_window_seconds: int = Field(default=3600, ge=1)
    orders_recovery_min_seconds: float = Field(default=0.25, ge=0, le=5)
    # Operators' resends of one purchaser's keys (the console) in each recovery window.
    orders_key_resends_per_purchaser: int = Field(default=3, ge=1, le=1000)
    # A purchaser with no order and no other activity (an unsubscribe, a privacy request) for this many years
    # is anonymised as in an erasure (orders.retention); the orders themselves stay, as accounting law requires.
    orders_purchaser_retention_years: int = Field(default=5, ge=1, le=100)

    def hash_key(self) -> bytes:
        return self.orders_secret.get_secret_value().encode()
