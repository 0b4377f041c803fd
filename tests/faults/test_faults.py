"""Each scenario drives real work through the running services, injects one fault, waits for the system to
settle and counts: nothing lost, nothing twice, every event audited once, dead-letter queues holding only
what was poison."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable

import aio_pika
import asyncpg
import pytest
from spm_common.settings import SERVICES
from spm_common.testing.faults import drop_broker_connections, wait_for_broker_connections
from spm_common.testing.smtp import SmtpServer
from spm_common.testing.world import AMQP_URL
from spm_common.topology import Topology

from .harness import REPORT, ContactWork, Row, System, run_command, settle

pytestmark = pytest.mark.timeout(300)


async def audited_message_ids(system: System) -> list[str]:
    conn = await system.world.admin()
    try:
        rows = await conn.fetch(
            "SELECT payload::json->>'message_id' AS id FROM audit.entries WHERE event_type = 'contact.message.received'"
        )
    finally:
        await conn.close()
    return [r["id"] for r in rows]


async def accepted_message_ids(system: System, addresses: list[str]) -> dict[str, str]:
    conn = await system.world.admin()
    try:
        rows = await conn.fetch("SELECT id::text, email FROM contact.messages WHERE email = ANY($1)", addresses)
    finally:
        await conn.close()
    return {r["email"]: r["id"] for r in rows}


async def diagnose(system: System) -> str:
    """Where the work is when the system did not settle: outbox backlogs, deliveries, queue depths."""
    conn = await system.world.admin()
    lines = []
    try:
        for schema in SERVICES:
            pending = await conn.fetchval(f"SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL")
            inbox = await conn.fetchval(f"SELECT count(*) FROM {schema}.inbox")
            lines.append(f"{schema}: outbox pending {pending}, inbox {inbox}")
        rows = await conn.fetch("SELECT status, count(*) FROM notifier.deliveries GROUP BY status")
        lines.append(f"notifier deliveries: {dict((r[0], r[1]) for r in rows)}")
    finally:
        await conn.close()
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        for service in SERVICES:
            topology = Topology(system.world.exchange, service)
            for name in (topology.queue_name, topology.retry_queue_name):
                channel = await connection.channel()
                try:
                    queue = await channel.declare_queue(name, passive=True)
                    lines.append(f"{name}: {queue.declaration_result.message_count} ready")
                except aio_pika.exceptions.ChannelClosed:
                    pass
    return "\n".join(lines)


async def dead_letter_counts(system: System) -> dict[str, int]:
    connection = await aio_pika.connect(AMQP_URL)
    counts = {}
    async with connection:
        channel = await connection.channel()
        for service in SERVICES:
            name = Topology(system.world.exchange, service).dead_letter_queue_name
            try:
                queue = await channel.declare_queue(name, passive=True)
                counts[service] = queue.declaration_result.message_count or 0
            except aio_pika.exceptions.ChannelClosed:
                channel = await connection.channel()
                counts[service] = 0
    return counts


async def run_scenario(
    system: System,
    smtp: SmtpServer,
    label: str,
    inject: Callable[[], Awaitable[None]],
    *,
    before: float = 2.0,
    after: float = 2.0,
    dead_letters: dict[str, int] | None = None,
) -> Row:
    """Work before, during and after `inject`; then settle and count."""
    work = ContactWork(system, label)
    stop = asyncio.Event()
    driver = asyncio.create_task(work.run(stop))
    await asyncio.sleep(before)
    await inject()
    recovered_at = time.monotonic()
    await asyncio.sleep(after)
    stop.set()
    await driver

    async def mail_settled() -> bool:
        lost, _, _ = work.mail_counts(smtp)
        return lost == 0

    try:
        await settle(mail_settled, timeout=90)
    except TimeoutError:
        print(await diagnose(system))
        raise
    ids = await accepted_message_ids(system, work.accepted)
    assert len(ids) == len(work.accepted), "every accepted message is stored exactly once"

    async def audit_settled() -> bool:
        audited = set(await audited_message_ids(system))
        return set(ids.values()) <= audited

    await settle(audit_settled, timeout=60)
    recovery = time.monotonic() - recovered_at
    audited = await audited_message_ids(system)
    audit_duplicates = sum(audited.count(i) - 1 for i in ids.values() if audited.count(i) > 1)
    lost, duplicated, window = work.mail_counts(smtp)
    dead_by_service = {k: v for k, v in (await dead_letter_counts(system)).items() if v}
    dead = sum(dead_by_service.values())
    if dead_by_service != (dead_letters or {}):
        print("dead letters:", await peek_dead_letters(system))
    row = Row(label, len(work.accepted), lost, duplicated + audit_duplicates, window, dead, recovery)
    REPORT.append(row)
    assert work.accepted, "the work stream was accepted before, during or after the fault"
    assert lost == 0
    assert duplicated - window == 0, "a duplicate e-mail with a new Message-ID is a real duplicate"
    assert audit_duplicates == 0
    assert dead_by_service == (dead_letters or {}), "the dead-letter queues hold the poison and nothing else"
    return row


async def test_broker_restart(system: System, smtp: SmtpServer) -> None:
    """By default every connection of this world's services is closed by the broker, twice (what a broker
    restart does to them, without disturbing anyone else on a shared broker); SPM_FAULT_BROKER=restart
    stops and starts the whole broker application instead."""

    async def inject() -> None:
        if os.environ.get("SPM_FAULT_BROKER") == "restart":
            await run_command("rabbitmqctl", "stop_app")
            await asyncio.sleep(5)
            await run_command("rabbitmqctl", "start_app")
            await run_command("rabbitmqctl", "await_startup")
            return
        for _ in range(2):
            assert await drop_broker_connections(system.world.name) >= len(SERVICES)
            await wait_for_broker_connections(system.world.name, len(SERVICES))

    label = "rabbitmq restarted" if os.environ.get("SPM_FAULT_BROKER") == "restart" else "rabbitmq connections closed"
    await run_scenario(system, smtp, label, inject)


async def test_postgres_connections_terminated(system: System, smtp: SmtpServer) -> None:
    async def inject() -> None:
        admin = await asyncpg.connect(system.world.database_url.rsplit("/", 1)[0] + "/postgres")
        try:
            for _ in range(5):
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = $1 AND pid <> pg_backend_pid()",
                    system.world.name,
                )
                await asyncio.sleep(0.6)
        finally:
            await admin.close()

    await run_scenario(system, smtp, "postgres connections killed", inject)


@pytest.mark.parametrize("service", ["notifier", "audit", "contact"])
async def test_service_killed(system: System, smtp: SmtpServer, service: str) -> None:
    async def inject() -> None:
        await system.services[service].kill(signal.SIGKILL)
        await asyncio.sleep(1)
        await system.restart(service)

    await run_scenario(system, smtp, f"{service} SIGKILLed", inject)


async def test_slow_network_with_cut_connections(system: System, smtp: SmtpServer) -> None:
    async def inject() -> None:
        for proxy in (system.broker_proxy, system.database_proxy):
            proxy.delay = 0.05
        await asyncio.sleep(3)
        for _ in range(2):
            system.broker_proxy.cut()
            system.database_proxy.cut()
            await asyncio.sleep(2)
        for proxy in (system.broker_proxy, system.database_proxy):
            proxy.delay = 0.0

    await run_scenario(system, smtp, "slow network, cut connections", inject)


async def test_smtp_refusing_then_failing_temporarily(system: System, smtp: SmtpServer) -> None:
    async def inject() -> None:
        smtp.refuse_connections()
        try:
            await asyncio.sleep(30)
        finally:
            smtp.accept_connections()
        smtp.reply_for_rcpt = "451 4.3.0 try again later"
        await asyncio.sleep(5)
        smtp.reply_for_rcpt = None

    await run_scenario(system, smtp, "smtp refused 30s, then 4xx", inject)


async def test_poison_messages_go_to_dead_letter_queues(system: System, smtp: SmtpServer) -> None:
    """Malformed JSON, a wrong schema, an unknown CloudEvents version and a 10 MB body, mixed into the
    stream: each lands in the dead-letter queue of every service bound to its routing key, with a reason."""
    poison = [
        (b"{not json", "notification.requested"),
        (
            b'{"specversion": "1.0", "id": "p-1", "type": "notification.requested", "source": "urn:poison",'
            b' "data": {"purpose": "answer-message"}}',
            "notification.requested",
        ),
        (
            b'{"specversion": "2.0", "id": "p-2", "type": "notification.requested", "source": "urn:poison",'
            b' "data": {}}',
            "notification.requested",
        ),
        (
            b'{"specversion": "1.0", "id": "p-3", "type": "notification.requested", "source": "urn:poison",'
            b' "data": {"blob": "' + b"x" * 10_000_000 + b'"}}',
            "notification.requested",
        ),
    ]
    # The audit service binds every routing key: it rejects all but the wrong-schema one, a valid CloudEvent.
    expected = {"notifier": 4, "audit": 3}

    async def inject() -> None:
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.get_exchange(system.world.exchange)
            for body, key in poison:
                await exchange.publish(
                    aio_pika.Message(body, content_type="application/cloudevents+json", message_id="poison"), key
                )

    try:
        await run_scenario(system, smtp, "poison messages", inject, dead_letters=expected)
    finally:
        reasons = await drain_dead_letters(system)
    assert len(reasons) == sum(expected.values())
    assert all(reasons), "every dead letter says why"


async def peek_dead_letters(system: System) -> list[str]:
    """Type and reason of every dead letter, left in place."""
    connection = await aio_pika.connect(AMQP_URL)
    seen = []
    async with connection:
        for service in SERVICES:
            channel = await connection.channel()
            name = Topology(system.world.exchange, service).dead_letter_queue_name
            try:
                queue = await channel.declare_queue(name, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                continue
            while (message := await queue.get(fail=False)) is not None:
                seen.append(f"{service}: {message.type} {(message.headers or {}).get('x-spm-error')}")
            await channel.close()  # unacknowledged: they go back to the queue
    return seen


async def drain_dead_letters(system: System) -> list[str]:
    connection = await aio_pika.connect(AMQP_URL)
    reasons = []
    async with connection:
        channel = await connection.channel()
        for service in SERVICES:
            name = Topology(system.world.exchange, service).dead_letter_queue_name
            try:
                queue = await channel.declare_queue(name, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                channel = await connection.channel()
                continue
            while (message := await queue.get(fail=False)) is not None:
                reasons.append(str((message.headers or {}).get("x-spm-error", "")))
                await message.ack()
    return reasons
