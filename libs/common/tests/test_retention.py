"""Retention shared by every service: consumed event ids leave the inbox, old dead letters leave the `.dlq`
queue for a masked parking table and then that table; each removal is announced with a count, no content."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import orjson
import pytest
from spm_common import outbox
from spm_common.handlers import Handlers, Meta
from spm_common.migrations import SchemaRoles, migrate
from spm_common.retention import RETENTION_PURGED, failed_at

from .conftest import PROBE_MIGRATIONS, Tap
from .test_consumer import Effect


async def _nothing(_conn: Any, _payload: Effect, _event: Meta) -> None:
    return None


@pytest.fixture
async def clean(lab: Any) -> None:
    conn = await lab.admin()
    try:
        await migrate(conn, "orders", PROBE_MIGRATIONS, SchemaRoles.of("orders"))
        await conn.execute(
            "DELETE FROM orders.inbox; DELETE FROM orders.outbox; DELETE FROM orders.dead_letters_parked"
        )
    finally:
        await conn.close()


async def _own_rounds_only(runtime: Any) -> None:
    """Stop the service's hourly parking loop (its first round runs at the start), so that the test's rounds
    are the only ones and each finds what the test put on the queue."""
    for task in runtime._tasks:
        if task.get_name() == "dead-letter-parking":
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def _purged(seen: Tap, what: str, total: int, timeout: float = 20) -> list[dict[str, Any]]:
    """The `retention.purged` payloads about `what`, once their counts add up to `total`."""
    async with asyncio.timeout(timeout):
        while True:
            reports = [orjson.loads(m.body)["data"] for m in seen.messages]
            reports = [r for r in reports if r["what"] == what]
            if sum(r["count"] for r in reports) >= total:
                return reports
            await asyncio.sleep(0.1)


async def test_inbox_rows_older_than_the_retention_are_purged_in_batches_and_reported(
    clean: None, lab: Any, probe: Callable[..., Any], tap: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox, "PURGE_BATCH", 3)
    conn = await lab.admin()
    try:
        # Seven event ids consumed 40 days ago, two yesterday.
        await conn.execute(
            "INSERT INTO orders.inbox (source, event_id, event_type, received_at)"
            " SELECT 'urn:test', 'old-' || g, 'probe.effect', now() - interval '40 days' FROM generate_series(1, 7) g"
            " UNION ALL SELECT 'urn:test', 'recent-' || g, 'probe.effect', now() - interval '1 day'"
            " FROM generate_series(1, 2) g"
        )
    finally:
        await conn.close()
    exchange = f"{lab.name}.{uuid.uuid4().hex[:8]}"
    # The relay purges on its first pass after the start, then hourly.
    async with (
        tap(exchange, RETENTION_PURGED) as seen,
        probe(handlers=Handlers().on(Effect, _nothing), exchange=exchange, inbox_retention_days=30) as runtime,
    ):
        reports = await _purged(seen, "inbox", 7)
        kept = await runtime.pool.fetch("SELECT event_id FROM inbox ORDER BY event_id")
    assert [r["event_id"] for r in kept] == ["recent-1", "recent-2"]
    assert sorted(r["count"] for r in reports) == [1, 3, 3]  # batches of PURGE_BATCH
    for report in reports:
        assert set(report) == {"service", "what", "count", "older_than"}  # counts, never which ids
        assert report["service"] == "orders"
        older_than = datetime.fromisoformat(report["older_than"])
        assert abs(older_than - (datetime.now(UTC) - timedelta(days=30))) < timedelta(minutes=5)


async def test_published_outbox_rows_purged_are_reported(
    clean: None, lab: Any, probe: Callable[..., Any], tap: Callable[..., Any]
) -> None:
    conn = await lab.admin()
    try:
        await conn.execute(
            "INSERT INTO orders.outbox (event_id, event_type, body, published_at)"
            " SELECT 'old-' || g, 'probe.happened', '\\x00', now() - interval '2 days' FROM generate_series(1, 5) g"
        )
    finally:
        await conn.close()
    exchange = f"{lab.name}.{uuid.uuid4().hex[:8]}"
    async with tap(exchange, RETENTION_PURGED) as seen, probe(exchange=exchange, outbox_retention_hours=24):
        [report] = await _purged(seen, "outbox", 5)
    assert report["count"] == 5 and report["service"] == "orders"


async def _dead_letter(channel: aio_pika.abc.AbstractChannel, queue: str, failed_at: datetime, body: bytes) -> str:
    message_id = str(uuid.uuid4())
    await channel.default_exchange.publish(
        aio_pika.Message(
            body,
            message_id=message_id,
            type="probe.effect",
            headers={
                "x-spm-error": "ValueError: bad card 4111 1111 1111 1111",
                "x-spm-failed-at": failed_at.isoformat(),
            },
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        routing_key=queue,
    )
    return message_id


async def test_old_dead_letters_are_parked_masked_then_deleted_and_reported(
    clean: None,
    lab: Any,
    probe: Callable[..., Any],
    tap: Callable[..., Any],
    amqp: aio_pika.abc.AbstractRobustConnection,
    queues: Callable[..., Any],
) -> None:
    exchange = f"{lab.name}.{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    body = orjson.dumps(
        {"type": "probe.effect", "data": {"email": "alice@example.com", "note": "call +84 912 345 678"}}
    )
    async with (
        tap(exchange, RETENTION_PURGED) as seen,
        probe(handlers=Handlers().on(Effect, _nothing), exchange=exchange, dlq_retention_days=14) as runtime,
    ):
        await _own_rounds_only(runtime)
        topology = runtime.topology
        channel = await amqp.channel(publisher_confirms=True)
        try:
            old = await _dead_letter(channel, topology.dead_letter_queue_name, now - timedelta(days=20), body)
            young = await _dead_letter(channel, topology.dead_letter_queue_name, now - timedelta(days=1), body)
        finally:
            await channel.close()
        assert runtime.dead_letters is not None
        assert await runtime.dead_letters.park() == 1

        [row] = await runtime.pool.fetch("SELECT * FROM dead_letters_parked")
        assert row["message_id"] == old
        assert row["event_type"] == "probe.effect"
        assert abs(row["failed_at"] - (now - timedelta(days=20))) < timedelta(seconds=1)
        stored = row["body"] + row["reason"]
        assert "alice@example.com" not in stored
        assert "912 345 678" not in stored
        assert "4111" not in stored
        assert "[redacted]" in row["body"]
        # The young one waits on the queue, where `spm-admin dlq list` shows it, with its headers intact.
        assert (await queues(topology))["dlq"] == 1
        channel = await amqp.channel()
        try:
            queue = await channel.declare_queue(topology.dead_letter_queue_name, passive=True)
            waiting = await queue.get(no_ack=True)
        finally:
            await channel.close()
        assert waiting.message_id == young
        assert waiting.headers["x-spm-failed-at"] == (now - timedelta(days=1)).isoformat()
        [parked] = await _purged(seen, "dead_letters", 1)
        assert parked["count"] == 1

        # Parked as long again: deleted, and reported.
        assert await runtime.dead_letters.purge_parked() == 0
        await runtime.pool.execute("UPDATE dead_letters_parked SET parked_at = now() - interval '15 days'")
        assert await runtime.dead_letters.purge_parked() == 1
        assert await runtime.pool.fetchval("SELECT count(*) FROM dead_letters_parked") == 0
        [deleted] = await _purged(seen, "dead_letters_parked", 1)
        assert set(deleted) == {"service", "what", "count", "older_than"}


async def test_a_dead_letter_is_not_acknowledged_unless_its_parked_row_committed(
    clean: None,
    lab: Any,
    probe: Callable[..., Any],
    amqp: aio_pika.abc.AbstractRobustConnection,
    queues: Callable[..., Any],
) -> None:
    exchange = f"{lab.name}.{uuid.uuid4().hex[:8]}"
    async with probe(handlers=Handlers().on(Effect, _nothing), exchange=exchange, dlq_retention_days=14) as runtime:
        await _own_rounds_only(runtime)
        channel = await amqp.channel(publisher_confirms=True)
        try:
            await _dead_letter(
                channel, runtime.topology.dead_letter_queue_name, datetime.now(UTC) - timedelta(days=20), b"not json"
            )
        finally:
            await channel.close()
        admin = await lab.admin()
        try:
            # The insert fails (the table refuses it): the message must stay on the queue.
            await admin.execute("ALTER TABLE orders.dead_letters_parked ADD CONSTRAINT refuse CHECK (false) NOT VALID")
            assert runtime.dead_letters is not None
            with pytest.raises(Exception, match="refuse"):
                await runtime.dead_letters.park()
            await asyncio.sleep(0.5)  # the channel closed: the unacknowledged message is back
            assert (await queues(runtime.topology))["dlq"] == 1
        finally:
            await admin.execute("ALTER TABLE orders.dead_letters_parked DROP CONSTRAINT refuse")
            await admin.close()
        assert await runtime.dead_letters.park() == 1
        assert (await queues(runtime.topology))["dlq"] == 0
        assert await runtime.pool.fetchval("SELECT body->>'text' FROM dead_letters_parked") == "not json"


class _Stub:
    def __init__(self, headers: dict[str, Any], timestamp: datetime | None = None) -> None:
        self.headers = headers
        self.timestamp = timestamp


def test_a_dead_letters_age_comes_from_the_consumer_or_the_broker_or_is_unknown() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    naive = when.replace(tzinfo=None)  # how the AMQP decoder hands over a timestamp
    assert failed_at(_Stub({"x-spm-failed-at": when.isoformat()})) == when  # type: ignore[arg-type]
    assert failed_at(_Stub({"x-death": [{"reason": "delivery_limit", "time": naive}]})) == when  # type: ignore[arg-type]
    assert failed_at(_Stub({}, timestamp=naive)) == when  # type: ignore[arg-type]
    assert failed_at(_Stub({})) is None  # type: ignore[arg-type]  # kept on the queue, not parked
