"""Retention: messages older than SPM_CONTACT_RETENTION_DAYS are deleted, with their replies, by a periodic job.

Each batch is deleted and announced (how many, which ids; never content) in one transaction, so the audit
trail learns of every deletion and of nothing that did not happen. Replicas share the work without
deleting anything twice (SKIP LOCKED). Expired rate-limit counters are swept on the same schedule.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import asyncpg
from spm_common import cards, outbox, ratelimit
from spm_common.db import DB_ERRORS
from spm_common.envelope import new_event
from spm_common.health import LoopHealth
from spm_common.logging import get_logger
from spm_common.redaction import describe_error

from contact import store
from contact.events import MESSAGES_DELETED, MessagesDeleted
from contact.intake import PURPOSE

BATCH = 1000
log = get_logger(__name__)


async def delete_expired(pool: asyncpg.Pool, retention_days: int, source: str, batch: int = BATCH) -> int:
    """Delete every message received more than `retention_days` ago; return how many."""
    cutoff = datetime.now(UTC) - timedelta(days=retention_days)
    total = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            message_ids, reply_ids = await store.delete_messages_before(conn, cutoff, batch)
            if message_ids:
                await outbox.add(
                    conn,
                    new_event(
                        MESSAGES_DELETED,
                        source,
                        MessagesDeleted(
                            count=len(message_ids),
                            message_ids=[str(i) for i in message_ids],
                            reply_ids=[str(i) for i in reply_ids],
                            received_before=cutoff,
                            retention_days=retention_days,
                        ),
                        purpose=PURPOSE,
                    ),
                )
        total += len(message_ids)
        if len(message_ids) < batch:
            break
    async with pool.acquire() as conn:
        await ratelimit.sweep(conn)
    if total:
        log.info("expired messages deleted", count=total)
    return total


async def run_periodically(
    pool: asyncpg.Pool, retention_days: int, interval_seconds: float, source: str, health: LoopHealth
) -> None:
    while True:
        try:
            await delete_expired(pool, retention_days, source)
            health.ok()
        except DB_ERRORS as exc:
            health.failed(describe_error(exc))
        await asyncio.sleep(interval_seconds)


async def merge_search_entries_periodically(pool: asyncpg.Pool, interval_seconds: float, health: LoopHealth) -> None:
    """Merge the search index's pending entries often, off the request path (see migration 0005): no stored
    message then waits on a merge of thousands."""
    while True:
        try:
            async with pool.acquire() as conn:
                await conn.execute("SELECT merge_search_entries()")
            health.ok()
        except DB_ERRORS as exc:
            health.failed(describe_error(exc))
        await asyncio.sleep(interval_seconds)


class Masked(NamedTuple):
    """How many stored messages and replies had card numbers masked."""

    messages: int
    replies: int


async def mask_card_numbers(pool: asyncpg.Pool, batch: int = BATCH) -> Masked:
    """Mask card numbers kept by an earlier version, which stored the form's text and operators' replies as
    written (now both are masked before they are stored): every message's subject and body and every reply's
    body, a batch a transaction. A row changed meanwhile (an erasure) is left as it now is."""
    return Masked(
        messages=await _mask_table(pool, "messages", ("subject", "body"), batch),
        replies=await _mask_table(pool, "replies", ("body",), batch),
    )


async def _mask_table(pool: asyncpg.Pool, table: str, columns: tuple[str, ...], batch: int) -> int:
    listed = ", ".join(columns)
    select = f"SELECT id, {listed} FROM {table} WHERE id > $1 ORDER BY id LIMIT $2"
    # Only if each column still holds what was read: the masked text never overwrites a newer one.
    update = (
        f"UPDATE {table} SET "
        + ", ".join(f"{c} = ${i + 2}" for i, c in enumerate(columns))
        + " WHERE id = $1 AND "
        + " AND ".join(f"{c} IS NOT DISTINCT FROM ${i + 2 + len(columns)}" for i, c in enumerate(columns))
    )
    after, changed = uuid.UUID(int=0), 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(select, after, batch)
            updates = []
            for row in rows:
                before = [row[c] for c in columns]
                masked = [cards.mask_text(text)[0] if text else text for text in before]
                if masked != before:
                    updates.append((row["id"], *masked, *before))
            if updates:
                await conn.executemany(update, updates)
        changed += len(updates)
        if len(rows) < batch:
            return changed
        after = rows[-1]["id"]
