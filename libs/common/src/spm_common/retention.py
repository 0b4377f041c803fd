"""Retention that every service shares, so that nothing is kept forever by accident.

- Published outbox rows older than `SPM_OUTBOX_RETENTION_HOURS` are deleted by the relay (spm_common.outbox),
  which reports them here (`outbox_purged`).
- Inbox rows (the consumed event ids, kept for idempotency) older than `SPM_INBOX_RETENTION_DAYS` are purged
  in batches by the outbox relay's hourly purge (`OutboxRelay.run`), after its published outbox rows.
- Dead letters older than `SPM_DLQ_RETENTION_DAYS` are moved from the service's `.dlq` queue into its
  `dead_letters_parked` table with personal data masked (`spm_common.redaction`), and deleted from there once
  parked as long again (`DeadLetterParking`).

Every removal is reported in the transaction that makes it as a `retention.purged` event, with a count and
never any content, so the audit trail learns of each and of nothing that did not happen.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import aio_pika
import asyncpg
import orjson
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from pydantic import AwareDatetime, BaseModel, ConfigDict

from spm_common import outbox
from spm_common.db import Connection
from spm_common.deadletters import SESSION_LOCK, SESSION_UNLOCK, connection_login, copy_message, requeue_exchange
from spm_common.envelope import new_event
from spm_common.health import LoopHealth
from spm_common.logging import get_logger
from spm_common.outbox import PURGE_EVERY_SECONDS, PURGE_TIMEOUT_SECONDS
from spm_common.redaction import describe_error, redact, redact_text
from spm_common.topology import Topology

log = get_logger(__name__)

RETENTION_PURGED = "retention.purged"
What = Literal["outbox", "inbox", "purchasers", "dead_letters", "dead_letters_parked"]


class RetentionPurged(BaseModel):
    """A retention job removed (or, for purchasers, anonymised) `count` records of `what` older than
    `older_than`. Never any content: the audit trail needs to know that it happened, not what was removed."""

    model_config = ConfigDict(frozen=True)

    service: str
    what: What
    count: int
    older_than: AwareDatetime


async def report(conn: Connection, source: str, service: str, what: What, count: int, older_than: datetime) -> None:
    """Enqueue the `retention.purged` event, in the transaction of the removal it reports."""
    if count:
        data = RetentionPurged(service=service, what=what, count=count, older_than=older_than)
        await outbox.add(conn, new_event(RETENTION_PURGED, source, data))


def outbox_purged(service: str, source: str) -> outbox.OnPurged:
    """The relay's report of the published outbox rows it deleted (`OutboxRelay(on_purged=...)`)."""

    async def reported(conn: Connection, count: int, older_than: datetime) -> None:
        await report(conn, source, service, "outbox", count, older_than)

    return reported


# Inbox ----------------------------------------------------------------------------------------------------

PURGE_INBOX = (
    "DELETE FROM inbox WHERE ctid = ANY(ARRAY(SELECT ctid FROM inbox WHERE received_at < $1"
    " ORDER BY received_at LIMIT $2))"
)


async def purge_inbox(pool: asyncpg.Pool, retention_days: float, *, service: str, source: str) -> int:
    """Delete up to outbox.PURGE_BATCH inbox rows received before the retention, oldest first, and report them;
    return how many (the batch: more may wait)."""
    older_than = datetime.now(UTC) - timedelta(days=retention_days)
    async with pool.acquire() as conn, conn.transaction():
        status = await conn.execute(PURGE_INBOX, older_than, outbox.PURGE_BATCH, timeout=PURGE_TIMEOUT_SECONDS)
        count = int(status.split()[-1])
        await report(conn, source, service, "inbox", count, older_than)
    return count


# Dead letters ---------------------------------------------------------------------------------------------

PARK = (
    "INSERT INTO dead_letters_parked (message_id, event_type, reason, failed_at, body)"
    " VALUES ($1, $2, $3, $4, $5::jsonb)"
)
PURGE_PARKED = (
    "DELETE FROM dead_letters_parked WHERE id IN (SELECT id FROM dead_letters_parked WHERE parked_at < $1"
    " ORDER BY parked_at LIMIT $2)"
)
# Messages looked at in one round at most (young ones go back to the end of the queue); the rest wait for the
# next round. A dead-letter queue holds a handful, unless something is broken: then an hour's delay is nothing.
PARK_BATCH = 1000
# Messages parked in one transaction (and reported by one event), then acknowledged together.
PARK_CHUNK = 100


def failed_at(message: AbstractIncomingMessage) -> datetime | None:
    """When the message was dead-lettered: the consumer's `x-spm-failed-at`, or the broker's own `x-death`
    time (a message dead-lettered by the broker, past its delivery limit), or else when it was published."""
    headers = message.headers or {}
    stamp = headers.get("x-spm-failed-at")
    if isinstance(stamp, bytes):
        stamp = stamp.decode("utf-8", "replace")
    if isinstance(stamp, str):
        with contextlib.suppress(ValueError):
            parsed = datetime.fromisoformat(stamp)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        time = deaths[0].get("time")
        if isinstance(time, datetime):
            return time if time.tzinfo else time.replace(tzinfo=UTC)
    # Put there by hand, say: when it was published is the closest there is.
    if isinstance(message.timestamp, datetime):
        return message.timestamp if message.timestamp.tzinfo else message.timestamp.replace(tzinfo=UTC)
    return None


def masked_body(body: bytes) -> Any:
    """The message's content as JSON with personal data masked; a body that is no JSON, as masked text."""
    try:
        return redact(orjson.loads(body))
    except orjson.JSONDecodeError:
        return {"text": redact_text(body.decode("utf-8", "replace"))[:10_000]}


def _identifier(value: str | None) -> str | None:
    return value[:200] if value else None


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return redact_text(str(value))[:500] if value is not None else None


class DeadLetterParking:
    """The periodic job that empties a service's `.dlq` of what is older than the retention.

    Each message old enough is written to `dead_letters_parked` and reported, and acknowledged only once that
    transaction committed: a crash in between leaves the message on the queue (parked twice at worst, never
    lost). A younger message goes back to the end of the queue as a copy, as `spm-admin dlq list` does it
    (a nack would count as a delivery against the quorum queue's delivery limit)."""

    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        connect: Callable[[], Awaitable[AbstractRobustConnection]],
        topology: Topology,
        retention_days: float,
        *,
        service: str,
        source: str,
        health: LoopHealth | None = None,
        every_seconds: float = PURGE_EVERY_SECONDS,
    ) -> None:
        self._pool = pool
        self._connect = connect
        self._topology = topology
        self._queue = topology.dead_letter_queue_name
        self._retention = timedelta(days=retention_days)
        self._service = service
        self._source = source
        self._health = health or LoopHealth(service, "dead-letter-parking")
        self._every = every_seconds

    async def run(self) -> None:
        while True:
            try:
                await self.park()
                await self.purge_parked()
                self._health.ok()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._health.failed(describe_error(exc))
            await asyncio.sleep(self._every)

    async def park(self) -> int:
        """Move the dead letters older than the retention to the parking table; return how many."""
        cutoff = datetime.now(UTC) - self._retention
        parked = 0
        async with self._pool().acquire() as conn:
            # Not while an erasure goes through the same queue (spm_common.privacy.DeadLetterEraser): each would
            # miss the messages the other holds. On the connection the parked rows are written on, released
            # at the end (or with the session, should the connection die).
            await conn.execute(SESSION_LOCK, self._queue)
            try:
                connection = await self._connect()
                channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                try:
                    parked = await self._park_waiting(conn, channel, cutoff, connection_login(connection))
                finally:
                    with contextlib.suppress(Exception):
                        await channel.close()
            finally:
                try:
                    await conn.execute(SESSION_UNLOCK, self._queue)
                except Exception:
                    # The pool does not reset advisory locks (runtime._keep_session): a connection that may
                    # still hold this one must not go back to it, or every erasure would wait for it.
                    conn.terminate()
                    raise
        if parked:
            log.info("dead letters parked", count=parked, queue=self._queue)
        return parked

    async def _park_waiting(self, conn: Connection, channel: AbstractChannel, cutoff: datetime, login: str) -> int:
        parked = 0
        queue = await channel.declare_queue(self._queue, passive=True)
        requeue = await requeue_exchange(channel, self._topology)
        # Only what waits now: a younger message put back at the end is not looked at twice in one round.
        waiting = min(queue.declaration_result.message_count or 0, PARK_BATCH)
        old: list[AbstractIncomingMessage] = []
        for _ in range(waiting):
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            when = failed_at(message)
            # Of unknown age: kept, rather than parked the day it failed (`spm-admin dlq list` shows it).
            if when is None or when >= cutoff:
                await requeue.publish(_copy(message, login), routing_key=self._queue)
                await message.ack()
                continue
            old.append(message)
            if len(old) == PARK_CHUNK:
                parked += await self._park(conn, old, cutoff)
                old = []
        parked += await self._park(conn, old, cutoff)
        return parked

    async def _park(self, conn: Connection, messages: list[AbstractIncomingMessage], cutoff: datetime) -> int:
        if not messages:
            return 0
        rows = [
            (
                # Identifiers as they are (a uuid's digit groups look like a phone number to the masking):
                # what `spm-admin dlq list` showed, to find a parked one by.
                _identifier(m.message_id),
                _identifier(m.type),
                _text((m.headers or {}).get("x-spm-error")),
                failed_at(m),
                orjson.dumps(masked_body(m.body)).decode(),
            )
            for m in messages
        ]
        async with conn.transaction():
            await conn.executemany(PARK, rows)
            await report(conn, self._source, self._service, "dead_letters", len(rows), cutoff)
        # Only now: had the commit failed, the messages would go back to the queue with the channel.
        for message in messages:
            await message.ack()
        return len(messages)

    async def purge_parked(self) -> int:
        """Delete parked dead letters parked longer than the retention, in batches; return how many."""
        cutoff = datetime.now(UTC) - self._retention
        total = 0
        while True:
            async with self._pool().acquire() as conn, conn.transaction():
                status = await conn.execute(PURGE_PARKED, cutoff, outbox.PURGE_BATCH, timeout=PURGE_TIMEOUT_SECONDS)
                count = int(status.split()[-1])
                await report(conn, self._source, self._service, "dead_letters_parked", count, cutoff)
            total += count
            if count < outbox.PURGE_BATCH:
                return total


def _copy(message: AbstractIncomingMessage, login: str) -> aio_pika.Message:
    # Without the count of deliveries: the copy is a message of its own, not this one delivered again.
    return copy_message(message, {k: v for k, v in (message.headers or {}).items() if k != "x-delivery-count"}, login)
