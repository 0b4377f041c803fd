"""Retention of purchasers: one with no order and no other activity for SPM_ORDERS_PURCHASER_RETENTION_YEARS is
anonymised exactly as an erasure does it (orders.privacy_answer.erase), in batches, hourly.

"Activity" is the purchaser row's last change (`updated_at`): an order (the upsert bumps it, and sets
`last_order_at`), an unsubscribe, a license recovery that sent the keys (`store.touch_purchaser`). An erased
purchaser has nothing left to anonymise. Each batch is anonymised
and reported (`retention.purged`, a count and never an address) in one transaction; replicas share the work
(SKIP LOCKED), so no purchaser is counted twice.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
from spm_common import outbox
from spm_common.db import DB_ERRORS
from spm_common.health import LoopHealth
from spm_common.logging import get_logger
from spm_common.outbox import PURGE_EVERY_SECONDS
from spm_common.privacy import forget_published
from spm_common.redaction import describe_error
from spm_common.retention import report

from orders import recovery
from orders.privacy_answer import erase

log = get_logger(__name__)

STALE = (
    "SELECT email FROM purchasers WHERE email IS NOT NULL AND greatest(last_order_at, updated_at) < $1"
    " ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED"
)


def cutoff(years: int, now: datetime | None = None) -> datetime:
    """The same calendar day `years` ago (28 February for a 29 February with no match)."""
    now = now or datetime.now(UTC)
    try:
        return now.replace(year=now.year - years)
    except ValueError:
        return now.replace(year=now.year - years, day=28)


async def anonymise_inactive(pool: asyncpg.Pool, years: int, *, hash_key: bytes, source: str) -> int:
    """Anonymise every purchaser inactive for `years`, a batch a transaction; return how many."""
    older_than = cutoff(years)
    total = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            addresses = [r["email"] for r in await conn.fetch(STALE, older_than, outbox.PURGE_BATCH)]
            if addresses:
                counts = await erase(conn, addresses, [recovery.email_bucket(a, hash_key) for a in addresses])
                await forget_published(conn, addresses)
                await report(conn, source, "orders", "purchasers", counts["purchasers"], older_than)
        total += len(addresses)
        if len(addresses) < outbox.PURGE_BATCH:
            break
    if total:
        log.info("inactive purchasers anonymised", count=total, years=years)
    return total


async def run_periodically(pool: asyncpg.Pool, years: int, *, hash_key: bytes, source: str, health: LoopHealth) -> None:
    while True:
        try:
            await anonymise_inactive(pool, years, hash_key=hash_key, source=source)
            health.ok()
        except DB_ERRORS as exc:
            health.failed(describe_error(exc))
        await asyncio.sleep(PURGE_EVERY_SECONDS)
