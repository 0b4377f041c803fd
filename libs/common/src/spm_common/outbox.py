"""The transactional outbox: an event is written in the transaction of the state change it reports, and a
relay publishes it afterwards, so a state change never goes unannounced and nothing is announced that did
not happen.

The relay wakes on LISTEN/NOTIFY (the notification arrives only at commit) and polls as a fallback; it
claims a batch with FOR UPDATE SKIP LOCKED (so replicas share the work), publishes the batch with
overlapping publisher confirms, marks the confirmed rows sent and commits. While the broker is away it
backs off and tries again; the rows wait in Postgres.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from spm_common.db import Connection
from spm_common.envelope import CloudEvent
from spm_common.logging import get_logger
from spm_common.metrics import EVENTS_PUBLISH_FAILED, EVENTS_PUBLISHED, OUTBOX_BACKLOG
from spm_common.pgnotify import Listener
from spm_common.redaction import describe_error

log = get_logger(__name__)

Publish = Callable[[str, str, bytes], Awaitable[object]]  # (event_type, event_id, body)

PUBLISHED_RETENTION = "1 day"
PURGE_EVERY_SECONDS = 3600.0
# A day of published rows may take longer to delete than the pool's statement timeout allows.
PURGE_TIMEOUT_SECONDS = 600.0
MAX_BACKOFF_SECONDS = 30.0


def channel_name(schema: str) -> str:
    """The LISTEN/NOTIFY channel; `enqueue` spells the same name in SQL."""
    return f"spm_outbox_{schema}"


async def enqueue(conn: Connection, *events: CloudEvent) -> None:
    """Add events to the outbox of the connection's schema; call inside the state change's transaction."""
    if not events:
        return
    await conn.executemany(
        "INSERT INTO outbox (event_id, event_type, body) VALUES ($1, $2, $3)",
        [(event.id, event.type, event.to_json()) for event in events],
    )
    await conn.execute("SELECT pg_notify('spm_outbox_' || current_schema(), '')")


# For hot paths where one round trip matters: a statement may write its state change and its events at
# once, `WITH change AS (INSERT ...), events AS (<ENQUEUE_FROM_ARRAYS>) SELECT <NOTIFY>`, with the three
# arrays of `outbox_arrays(events)` bound to the placeholders named in ENQUEUE_FROM_ARRAYS.
ENQUEUE_FROM_ARRAYS = (
    "INSERT INTO outbox (event_id, event_type, body)"
    " SELECT * FROM unnest({ids}::text[], {types}::text[], {bodies}::bytea[])"
)
NOTIFY = "pg_notify('spm_outbox_' || current_schema(), '')"


def outbox_arrays(events: Sequence[CloudEvent]) -> tuple[list[str], list[str], list[bytes]]:
    """The (ids, types, bodies) arrays ENQUEUE_FROM_ARRAYS takes."""
    return [e.id for e in events], [e.type for e in events], [e.to_json() for e in events]


class OutboxRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        listen_dsn: str,
        schema: str,
        publish: Publish,
        *,
        service: str,
        batch_size: int = 200,
        poll_seconds: float = 2.0,
    ) -> None:
        self._pool = pool
        self._schema = schema
        self._publish = publish
        self._service = service
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._listener = Listener(listen_dsn, channel_name(schema))
        self._resumed = asyncio.Event()

    async def run(self) -> None:
        backoff = 0.5
        loop = asyncio.get_running_loop()
        next_purge = loop.time() + PURGE_EVERY_SECONDS
        while True:
            try:
                await self._listener.ensure()
                while await self.publish_batch() == self._batch_size:
                    pass
                await self._update_backlog()
                if loop.time() >= next_purge:
                    await self.purge_published()
                    next_purge = loop.time() + PURGE_EVERY_SECONDS
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox relay failed, backing off", error=describe_error(exc), backoff=backoff)
                await self._listener.close()
                # `resume` (called when the broker connection is back) ends the wait early.
                self._resumed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._resumed.wait(), backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            await self._listener.wait(self._poll_seconds)

    def resume(self) -> None:
        """Whatever made the relay back off is over (the broker is back): try again now."""
        self._resumed.set()

    async def close(self) -> None:
        await self._listener.close()

    async def publish_batch(self) -> int:
        """Publish one batch; return how many rows it claimed. Raises if any publish was not confirmed."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT id, event_id, event_type, body FROM outbox WHERE published_at IS NULL"
                " ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                self._batch_size,
            )
            if not rows:
                return 0
            results = await asyncio.gather(
                *(self._publish(row["event_type"], row["event_id"], bytes(row["body"])) for row in rows),
                return_exceptions=True,
            )
            sent = [
                row["id"] for row, result in zip(rows, results, strict=True) if not isinstance(result, BaseException)
            ]
            failures: Sequence[BaseException] = [r for r in results if isinstance(r, BaseException)]
            if sent:
                await conn.execute(
                    "UPDATE outbox SET published_at = now(), attempts = attempts + 1 WHERE id = ANY($1::bigint[])",
                    sent,
                )
            if failures:
                failed = [row["id"] for row, r in zip(rows, results, strict=True) if isinstance(r, BaseException)]
                await conn.execute(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = ANY($1::bigint[])",
                    failed,
                    describe_error(failures[0]),
                )
        for row, result in zip(rows, results, strict=True):
            if not isinstance(result, BaseException):
                EVENTS_PUBLISHED.labels(self._service, row["event_type"]).inc()
        if failures:
            EVENTS_PUBLISH_FAILED.labels(self._service).inc(len(failures))
            raise failures[0]
        return len(rows)

    async def purge_published(self) -> int:
        async with self._pool.acquire() as conn:
            result = await conn.execute(
                f"DELETE FROM outbox WHERE published_at < now() - interval '{PUBLISHED_RETENTION}'",
                timeout=PURGE_TIMEOUT_SECONDS,
            )
        return int(result.split()[-1])

    async def _update_backlog(self) -> None:
        async with self._pool.acquire() as conn:
            backlog = await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        OUTBOX_BACKLOG.labels(self._service).set(backlog)
