"""The transactional outbox against the real Postgres and RabbitMQ: atomicity, the AMQP properties of
CONTRACT section 3, waking on NOTIFY, polling as the fallback, two relays sharing rows, broker failures."""

from __future__ import annotations

import asyncio
import statistics
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import asyncpg
import httpx
import orjson
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from spm_common import outbox
from spm_common.db import INDEX_SCAN_CLAIM
from spm_common.envelope import CONTENT_TYPE, CloudEvent, new_event
from spm_common.http import create_app
from spm_common.migrations import SchemaRoles, migrate
from spm_common.outbox import CLAIM, AmqpPublisher, OutboxRelay, enqueue
from spm_common.runtime import Runtime
from spm_common.testing.logs import captured_json_logs
from spm_common.testing.world import running

from .conftest import PROBE_MIGRATIONS, ProbeSettings

pytestmark = pytest.mark.asyncio


def probe_event(kind: str = "probe.happened", **data: Any) -> CloudEvent:
    return new_event(kind, "urn:spm:orders", {"n": uuid.uuid4().hex, **data})


@pytest.fixture
async def clean_outbox(lab: Any) -> AsyncIterator[None]:
    """Every test here starts with an empty outbox in the probe's schema (all tests share the lab world)."""
    conn = await lab.admin()
    try:
        await migrate(conn, "orders", PROBE_MIGRATIONS, SchemaRoles.of("orders"))
        await conn.execute("DELETE FROM orders.outbox")
        yield
    finally:
        await conn.close()


@asynccontextmanager
async def parts(settings: ProbeSettings) -> AsyncIterator[tuple[asyncpg.Pool, Runtime]]:
    """The probe's pool and connected broker, without the Runtime's own relay: tests run their relays."""
    runtime = Runtime(settings, migrations=PROBE_MIGRATIONS)
    pool = await asyncpg.create_pool(
        settings.role_database_url(), min_size=1, max_size=6, server_settings={"search_path": "orders"}
    )
    await runtime.broker.connect()
    await runtime.broker.declare_exchange(runtime.topology.exchange)
    try:
        yield pool, runtime
    finally:
        await runtime.broker.stop()
        await pool.close()


def backlog(service: str) -> float | None:
    return REGISTRY.get_sample_value("spm_outbox_backlog", {"service": service})


async def unpublished(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"))


async def wait_until(probe: Callable[[], Awaitable[Any]], expected: Any, timeout: float = 10) -> None:
    """The relay marks rows sent after the broker confirmed them, so a delivery can come first."""
    async with asyncio.timeout(timeout):
        while await probe() != expected:
            await asyncio.sleep(0.05)


@asynccontextmanager
async def relays(*relay: OutboxRelay) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(r.run()) for r in relay]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for r in relay:
            await r.close()


async def test_state_change_and_event_commit_together_with_contract_properties(
    clean_outbox: None, probe: Callable[..., Any], tap: Callable[..., Any]
) -> None:
    async with probe() as runtime:
        async with tap(runtime.settings.exchange, "probe.#") as seen:
            rolled_back, committed = probe_event(), probe_event()
            with pytest.raises(RuntimeError):
                async with runtime.pool.acquire() as conn, conn.transaction():
                    await conn.execute("INSERT INTO things (id) VALUES ($1)", rolled_back.id)
                    await enqueue(conn, rolled_back)
                    raise RuntimeError("the state change fails after the event was enqueued")
            async with runtime.pool.acquire() as conn, conn.transaction():
                await conn.execute("INSERT INTO things (id) VALUES ($1)", committed.id)
                await enqueue(conn, committed)

            [message] = await seen.wait(1)
            await asyncio.sleep(0.3)  # an event of the rolled-back transaction would have come first
            assert seen.ids == [committed.id]

        assert message.message_id == committed.id
        assert message.type == committed.type
        assert message.routing_key == committed.type
        assert message.content_type == CONTENT_TYPE
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert message.exchange == runtime.settings.exchange
        assert CloudEvent.parse(message.body) == committed

        async with runtime.pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM things WHERE id = $1", rolled_back.id) == 0
            outbox = await conn.fetch("SELECT event_id, published_at FROM outbox")
        assert [row["event_id"] for row in outbox] == [committed.id]
        assert outbox[0]["published_at"] is not None


async def test_relay_wakes_on_notify_well_before_its_poll(
    clean_outbox: None, probe: Callable[..., Any], tap: Callable[..., Any]
) -> None:
    async with probe(outbox_poll_seconds=10) as runtime:
        await asyncio.sleep(0.2)  # the relay's first pass is over; it now waits for NOTIFY or 10 s
        async with tap(runtime.settings.exchange, "probe.#") as seen:
            latencies = []
            for n in range(5):
                event = probe_event()
                async with runtime.pool.acquire() as conn, conn.transaction():
                    await enqueue(conn, event)
                committed = asyncio.get_running_loop().time()
                await seen.wait(n + 1)
                latencies.append(seen.arrived[n] - committed)
        print(
            f"commit-to-delivery latency: median {statistics.median(latencies) * 1000:.1f} ms, "
            f"max {max(latencies) * 1000:.1f} ms (poll interval 10 s)"
        )
        assert max(latencies) < 1.0
        assert statistics.median(latencies) < 0.3


async def test_relay_polls_when_a_notification_is_missed(
    clean_outbox: None, lab: Any, probe: Callable[..., Any], tap: Callable[..., Any]
) -> None:
    async with probe(outbox_poll_seconds=0.5) as runtime:
        async with tap(runtime.settings.exchange, "probe.#") as seen:
            # A row written without NOTIFY (as by a hand-made INSERT) still goes out, by the poll.
            silent = probe_event()
            async with runtime.pool.acquire() as conn:
                await conn.execute(
                    "INSERT INTO outbox (event_id, event_type, body) VALUES ($1, $2, $3)",
                    silent.id,
                    silent.type,
                    silent.to_json(),
                )
            await seen.wait(1, timeout=3)

            # The LISTEN connection dies; a notification sent meanwhile is lost, and the poll covers it.
            admin = await lab.admin()
            try:
                killed = await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND query ILIKE 'LISTEN%spm_outbox_orders%'"
                )
            finally:
                await admin.close()
            assert killed == 1
            missed = probe_event()
            async with runtime.pool.acquire() as conn, conn.transaction():
                await enqueue(conn, missed)
            await seen.wait(2, timeout=3)
        assert seen.ids == [silent.id, missed.id]


async def test_two_relays_share_2000_rows_without_duplicate_or_loss(
    clean_outbox: None, probe_settings: Callable[..., ProbeSettings], tap: Callable[..., Any]
) -> None:
    settings = probe_settings()
    events = [probe_event() for _ in range(2000)]
    async with parts(settings) as (pool, runtime), tap(settings.exchange, "probe.#") as seen:
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(conn, *events)
        published: list[list[str]] = [[], []]

        def counting(index: int) -> Any:
            async def publish(event_type: str, event_id: str, body: bytes, routing_key: str) -> Any:
                result = await runtime.publish(event_type, event_id, body, routing_key)
                published[index].append(event_id)
                return result

            return publish

        pair = [
            OutboxRelay(
                pool,
                settings.role_database_url(),
                "orders",
                counting(i),
                service="orders",
                batch_size=50,
                poll_seconds=0.5,
            )
            for i in range(2)
        ]
        started = asyncio.get_running_loop().time()
        async with relays(*pair):
            await seen.wait(2000, timeout=30)
            elapsed = asyncio.get_running_loop().time() - started
            await wait_until(lambda: unpublished(pool), 0)
            await asyncio.sleep(0.5)  # room for a duplicate to show up
        print(
            f"two relays published 2000 rows in {elapsed:.2f} s ({2000 / elapsed:.0f} rows/s), "
            f"split {len(published[0])}/{len(published[1])}"
        )
        assert len(seen.ids) == 2000
        assert set(seen.ids) == {e.id for e in events}
        assert sorted(published[0] + published[1]) == sorted(e.id for e in events)
        assert published[0] and published[1], "both relays should have taken a share"
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT max(attempts) FROM outbox") == 1


async def test_rows_stay_while_the_broker_refuses_and_go_out_later(
    clean_outbox: None, probe_settings: Callable[..., ProbeSettings], tap: Callable[..., Any]
) -> None:
    settings = probe_settings()
    events = [probe_event() for _ in range(10)]
    state = {"broken": True, "refused": 0}

    async def flaky(event_type: str, event_id: str, body: bytes, routing_key: str) -> Any:
        # Half the publishes of a batch fail while the broker is "away": the others must still be marked sent.
        if state["broken"] and int(uuid.UUID(event_id)) % 2:
            state["refused"] += 1
            raise ConnectionError("broker connection lost")
        return await runtime.publish(event_type, event_id, body, routing_key)

    async with parts(settings) as (pool, runtime), tap(settings.exchange, "probe.#") as seen:
        relay = OutboxRelay(pool, settings.role_database_url(), "orders", flaky, service="orders", poll_seconds=0.5)
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(conn, *events)
        refused_ids = {e.id for e in events if int(uuid.UUID(e.id)) % 2}
        async with relays(relay):
            await seen.wait(10 - len(refused_ids), timeout=5)
            await asyncio.sleep(1.0)  # a retry or two while still broken
            async with pool.acquire() as conn:
                waiting = await conn.fetch(
                    "SELECT event_id, attempts, last_error FROM outbox WHERE published_at IS NULL"
                )
            assert {row["event_id"] for row in waiting} == refused_ids
            assert all(row["attempts"] >= 1 and "ConnectionError" in row["last_error"] for row in waiting)
            assert backlog("orders") == len(refused_ids)  # the gauge says how many wait, while they wait
            assert set(seen.ids) == {e.id for e in events} - refused_ids
            assert state["refused"] >= len(refused_ids)

            state["broken"] = False
            await seen.wait(10, timeout=10)
            await wait_until(lambda: unpublished(pool), 0)
            await wait_until(lambda: asyncio.sleep(0, backlog("orders")), 0)
        assert sorted(seen.ids) == sorted(e.id for e in events)
        bodies = {m.message_id: orjson.loads(m.body) for m in seen.messages}
        assert all(bodies[e.id]["id"] == e.id for e in events)


async def test_a_batch_the_broker_refuses_stays_and_goes_out_once_it_can(
    clean_outbox: None,
    probe_settings: Callable[..., ProbeSettings],
    tap: Callable[..., Any],
    amqp: aio_pika.abc.AbstractRobustConnection,
) -> None:
    # The runtime's relay writes a whole batch at once: when the broker refuses it (here the exchange does not
    # exist yet, so the broker closes the channel), every row of it stays, with its error, and goes out later.
    settings = probe_settings()
    later = f"{settings.exchange}.later"
    events = [probe_event() for _ in range(30)]
    async with parts(settings) as (pool, runtime):
        publisher = AmqpPublisher(runtime.broker.connect, later, timeout=5)
        relay = OutboxRelay(
            pool,
            settings.role_database_url(),
            "orders",
            publisher,
            publish_many=publisher.publish_many,
            service="orders",
            batch_size=20,
            poll_seconds=0.5,
        )
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(conn, *events)
        try:
            with pytest.raises(Exception, match="later"):
                await relay.publish_batch()
            waiting = await pool.fetch("SELECT attempts, last_error FROM outbox WHERE published_at IS NULL")
            assert len(waiting) == 30
            assert sum(row["attempts"] for row in waiting) == 20
            assert all("later" in row["last_error"] for row in waiting if row["attempts"])

            async with tap(later, "probe.#") as seen, relays(relay):  # the tap declares the exchange
                await seen.wait(30, timeout=20)
                await wait_until(lambda: unpublished(pool), 0)
                await asyncio.sleep(0.3)  # room for a duplicate to show up
            assert sorted(seen.ids) == sorted(e.id for e in events)
        finally:
            await publisher.close()
            channel = await amqp.channel()
            await channel.exchange_delete(later)


class HeldConfirms:
    """A broker that takes each batch at once (`written`, in order) and confirms it only when the test sets its
    event (`confirmed`, one per batch)."""

    def __init__(self) -> None:
        self.written: list[list[str]] = []
        self.confirmed: list[asyncio.Event] = []

    async def publish_many(self, messages: Any, on_written: Callable[[], None]) -> list[object]:
        self.written.append([event_id for _, event_id, *_ in messages])
        on_written()
        confirmation = asyncio.Event()
        self.confirmed.append(confirmation)
        await confirmation.wait()
        return [None] * len(messages)

    async def refuse_one(self, *_: Any) -> Any:
        raise AssertionError("the batch goes through publish_many")

    def relay(self, pool: asyncpg.Pool, settings: ProbeSettings, **options: Any) -> OutboxRelay:
        """The orders schema's relay, publishing through this broker."""
        return OutboxRelay(
            pool,
            settings.role_database_url(),
            "orders",
            self.refuse_one,
            publish_many=self.publish_many,
            service="orders",
            **options,
        )


async def test_the_next_batch_is_claimed_while_the_one_before_awaits_its_confirmations(
    clean_outbox: None, probe_settings: Callable[..., ProbeSettings]
) -> None:
    settings = probe_settings()
    events = [probe_event() for _ in range(25)]
    broker = HeldConfirms()
    async with parts(settings) as (pool, _):
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(conn, *events)
        relay = broker.relay(pool, settings, batch_size=10, poll_seconds=0.5)
        async with relays(relay):
            await wait_until(lambda: asyncio.sleep(0, len(broker.written)), 2)
            await asyncio.sleep(0.3)
            assert len(broker.written) == 2, "two batches in flight at most"
            assert await unpublished(pool) == 25  # nothing is marked before the broker confirmed it
            for n in range(3):
                await wait_until(lambda: asyncio.sleep(0, len(broker.confirmed) > n), True)  # noqa: B023
                broker.confirmed[n].set()
            await wait_until(lambda: unpublished(pool), 0)
        assert [len(batch) for batch in broker.written] == [10, 10, 5]
        assert [event_id for batch in broker.written for event_id in batch] == [e.id for e in events]  # in order, once
        assert await pool.fetchval("SELECT max(attempts) FROM outbox") == 1


async def test_rows_committed_while_a_batch_awaits_its_confirmations_are_claimed_at_once(
    clean_outbox: None, probe_settings: Callable[..., ProbeSettings]
) -> None:
    settings = probe_settings()
    first, second = [probe_event() for _ in range(5)], [probe_event() for _ in range(3)]
    broker = HeldConfirms()
    async with parts(settings) as (pool, _):
        relay = broker.relay(pool, settings, poll_seconds=10)
        async with relays(relay):
            await asyncio.sleep(0.3)  # listening
            async with pool.acquire() as conn, conn.transaction():
                await enqueue(conn, *first)
            await wait_until(lambda: asyncio.sleep(0, len(broker.written)), 1)
            async with pool.acquire() as conn, conn.transaction():
                await enqueue(conn, *second)  # notified while the first batch awaits the broker
            await wait_until(lambda: asyncio.sleep(0, len(broker.written)), 2, timeout=2)
            assert await unpublished(pool) == 8
            for confirmation in broker.confirmed:
                confirmation.set()
            await wait_until(lambda: unpublished(pool), 0)
        assert broker.written == [[e.id for e in first], [e.id for e in second]]


async def test_a_claim_after_thousands_of_events_reads_the_waiting_rows_by_index(lab: Any, clean_outbox: None) -> None:
    """The rows published since the last vacuum keep their entries in the index of waiting rows. Left to itself,
    Postgres plans this claim as a bitmap scan, which reads all of those entries and their rows on every claim
    (~1 ms a claim at 40,000); the relay's claim must be an index scan, which stops at the batch."""
    conn = await lab.admin()
    try:
        await conn.execute("SET search_path TO orders")
        await conn.execute(
            "INSERT INTO outbox (event_id, event_type, body)"
            " SELECT 'published-' || g, 'probe.happened', '\\x00' FROM generate_series(1, 5000) AS g"
        )
        await conn.execute("UPDATE outbox SET published_at = now()")
        await conn.execute("INSERT INTO outbox (event_id, event_type, body) VALUES ('waiting', 'probe.happened', '')")
        async with conn.transaction():
            await conn.execute(INDEX_SCAN_CLAIM)
            plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {CLAIM}", 200)
    finally:
        await conn.close()
    assert "Bitmap" not in plan
    assert '"Index Name": "outbox_pending"' in plan


async def test_published_rows_are_deleted_after_the_retention_a_batch_at_a_time(
    clean_outbox: None, probe_settings: Callable[..., ProbeSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox, "PURGE_BATCH", 3)
    settings = probe_settings()
    old, recent, waiting = ([probe_event() for _ in range(n)] for n in (7, 2, 2))
    async with parts(settings) as (pool, runtime):
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(conn, *old, *recent, *waiting)
            await conn.execute(
                "UPDATE outbox SET published_at = now() - interval '2 hours' WHERE event_id = ANY($1::text[])",
                [e.id for e in old],
            )
            await conn.execute(
                "UPDATE outbox SET published_at = now() - interval '10 minutes' WHERE event_id = ANY($1::text[])",
                [e.id for e in recent],
            )
        relay = OutboxRelay(
            pool, settings.role_database_url(), "orders", runtime.publish, service="orders", retention_hours=1
        )
        async with relays(relay):  # on its first passes: seven rows in batches of three, then an hour's rest
            await wait_until(lambda: pool.fetchval("SELECT count(*) FROM outbox"), 4)
            await asyncio.sleep(0.3)
        kept = await pool.fetch("SELECT event_id, published_at IS NOT NULL AS published FROM outbox")
        assert {row["event_id"] for row in kept} == {e.id for e in (*recent, *waiting)}
        assert all(row["published"] for row in kept), "the waiting rows were published meanwhile"


async def test_a_relay_that_keeps_failing_warns_once_moves_its_gauges_and_recovers(
    clean_outbox: None,
    probe_settings: Callable[..., ProbeSettings],
    amqp: aio_pika.abc.AbstractRobustConnection,
) -> None:
    # The exchange vanishes under a running service: every publish is refused, and the relay retries with
    # backoff. An operator sees one warning (not one per round), the loop gauges at /metrics, and the recovery.
    settings = probe_settings()
    runtime = Runtime(settings, migrations=PROBE_MIGRATIONS)
    app = create_app(runtime, title="probe", description="a probe")
    labels = {"service": "orders", "loop": "outbox-relay"}

    async def gauge(client: httpx.AsyncClient, name: str) -> float | None:
        text = (await client.get("/metrics")).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return sample.value
        return None

    with captured_json_logs("orders") as logs:
        async with running(app) as client:
            channel = await amqp.channel()
            await channel.exchange_delete(settings.exchange)
            started_at = await gauge(client, "spm_loop_last_success_timestamp_seconds")
            async with runtime.pool.acquire() as conn, conn.transaction():
                await enqueue(conn, probe_event())

            async def failing_thrice() -> bool:
                return (await gauge(client, "spm_loop_consecutive_failures") or 0) >= 3

            await wait_until(failing_thrice, True, timeout=30)
            failures = await gauge(client, "spm_loop_failures_total")
            assert failures is not None and failures >= 3
            await channel.declare_exchange(settings.exchange, aio_pika.ExchangeType.TOPIC, durable=True)

            async def recovered() -> bool:
                return await gauge(client, "spm_loop_consecutive_failures") == 0

            await wait_until(recovered, True, timeout=30)
            await wait_until(lambda: unpublished(runtime.pool), 0)
            last_success = await gauge(client, "spm_loop_last_success_timestamp_seconds")
            assert started_at is not None and last_success is not None and last_success > started_at
            await channel.close()
    relay_lines = [line for line in logs.lines if line.get("loop") == "outbox-relay"]
    failing = [line for line in relay_lines if line["event"] == "background loop failing"]
    assert len(failing) == 1 and failing[0]["level"] == "warning" and failing[0]["failures"] == 1
    assert "NOT_FOUND" in failing[0]["error"] or "404" in failing[0]["error"], failing[0]
    back = [line for line in relay_lines if line["event"] == "background loop recovered"]
    assert len(back) == 1 and back[0]["failures"] >= 3 and back[0]["suppressed"] == back[0]["failures"] - 1
