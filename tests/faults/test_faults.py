"""Each scenario drives every kind of real work through the running services (contact messages, orders by
event and by webhook, page views, an upgrade fan-out), injects one fault during it, waits for the system to
settle and counts: nothing lost, nothing twice, every event audited once and the chain verifying, the
dead-letter queues holding only what was poison, and every service healthy again without a hand on it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import aio_pika
import aio_pika.abc
import asyncpg
import orjson
import pytest
from spm_common.settings import SERVICES
from spm_common.testing.faults import drop_broker_connections, wait_for_broker_connections
from spm_common.testing.smtp import SmtpServer
from spm_common.testing.world import AMQP_URL
from spm_common.topology import Topology

from .checks import (
    ORDER_CONFIRMATION,
    REPORT,
    MailIndex,
    Row,
    audit_missing,
    count_everything,
    expected_mail,
    mail_missing,
    outbox_watermarks,
    sent_of,
    unhealthy,
)
from .harness import System, holding_messages, run_command, settle
from .work import Workload

pytestmark = pytest.mark.timeout(300)
SETTLE_SECONDS = 120


async def add_product(system: System) -> str:
    """A product of the scenario's own, so its upgrade reaches this scenario's purchasers only."""
    sku = f"FT-{uuid.uuid4().hex[:8].upper()}"
    conn = await system.world.admin()
    try:
        await conn.execute(
            "INSERT INTO orders.products (sku, name_en, name_vi, download_url, major_version)"
            " VALUES ($1, 'Fault suite product', 'Sản phẩm thử lỗi', 'https://spmgroup.vn/dl/fault.exe', 1)",
            sku,
        )
    finally:
        await conn.close()
    return sku


async def release_when_bought(work: Workload, mail: MailIndex, timeout: float = 30) -> str:
    """Release the upgrade once its purchasers' orders are confirmed by e-mail: the notifier sends upgrade
    notices to known purchasers only, and months, not milliseconds, separate an order from an upgrade."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mail.update()
        if work.orders.upgrade_buyers_decided and all(
            mail.by_kind[(a, ORDER_CONFIRMATION)] for a in work.orders.upgrade_buyers
        ):
            break
        await asyncio.sleep(0.2)
    return await work.orders.release_upgrade()


async def dead_letter_queues(system: System) -> AsyncIterator[tuple[str, aio_pika.abc.AbstractQueue]]:
    """Each service's dead-letter queue that exists, on a channel of its own, closed once the caller is done
    with it: what was taken without an acknowledgement goes back to the queue."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        for service in SERVICES:
            channel = await connection.channel()
            name = Topology(system.world.exchange, service).dead_letter_queue_name
            try:
                queue = await channel.declare_queue(name, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                continue
            yield service, queue
            await channel.close()


async def dead_letter_counts(system: System) -> dict[str, int]:
    counts = dict.fromkeys(SERVICES, 0)
    async for service, queue in dead_letter_queues(system):
        counts[service] = queue.declaration_result.message_count or 0
    return counts


async def diagnose(system: System, mail: MailIndex, work: Workload, since: dict[str, int]) -> str:
    """Where the work is when the system did not settle: what is missing, outbox backlogs, deliveries,
    queue depths."""
    wanted, _ = expected_mail(work)
    mail.update()
    missing = sorted(key for key in wanted if mail.by_kind[key] == 0)
    lines = [
        f"missing e-mails: {len(missing)} {missing[:5]}",
        f"missing audit entries: {await audit_missing(system, work, since)}",
    ]
    conn = await system.world.admin()
    try:
        for schema in SERVICES:
            pending = await conn.fetchval(f"SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL")
            lines.append(f"{schema}: outbox pending {pending}")
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
    lines += await task_stacks(system)
    return "\n".join(lines)


async def task_stacks(system: System) -> list[str]:
    """Where each service's tasks wait (SIGUSR1 makes a service log it): a stalled one shows its stall."""
    sizes = {}
    for name, service in system.services.items():
        if service.process is not None and service.process.poll() is None:
            sizes[name] = service.log_path.stat().st_size
            service.process.send_signal(signal.SIGUSR1)
    await asyncio.sleep(1)
    lines = []
    for name, size in sizes.items():
        with system.services[name].log_path.open("rb") as log:
            log.seek(size)
            for raw in log:
                with contextlib.suppress(ValueError):
                    entry = orjson.loads(raw)
                    frames = entry.get("stack") or [""]
                    # The service's own tasks; the libraries' (broker I/O, HTTP server) only add noise.
                    if entry.get("event") == "task stack" and "site-packages" not in frames[-1]:
                        lines.append(f"{name} {entry.get('task')}: {' <- '.join(reversed(frames[-4:]))}")
    return lines


async def run_scenario(
    system: System,
    mail: MailIndex,
    label: str,
    inject: Callable[[], Awaitable[None]],
    *,
    before: float = 2.0,
    after: float = 2.0,
    dead_letters: dict[str, int] | None = None,
) -> Row:
    """Work before, during and after `inject` (the upgrade is released just before it); then settle and count."""
    since = await outbox_watermarks(system)
    work = Workload(system, label, await add_product(system))
    work.start()
    try:
        await asyncio.sleep(before)
        work.release_event_id = await release_when_bought(work, mail)
        await inject()
        recovered_at = time.monotonic()
        await asyncio.sleep(after)
    finally:
        await work.stop()

    async def settled() -> bool:
        return mail_missing(mail, work) == 0 and await audit_missing(system, work, since) == 0

    try:
        await settle(settled, timeout=SETTLE_SECONDS)
    except TimeoutError:
        print(await diagnose(system, mail, work, since))
        raise
    recovery = time.monotonic() - recovered_at
    counts = await count_everything(system, mail, work, since)
    down = await unhealthy(system)
    dead_by_service = {k: v for k, v in (await dead_letter_counts(system)).items() if v}
    if dead_by_service != (dead_letters or {}):
        print("dead letters:", await peek_dead_letters(system))
    details = [f"{k} lost {v}" for k, v in counts.lost.items() if v]
    details += [f"{k} twice {v}" for k, v in counts.duplicated.items() if v]
    details += counts.problems
    if counts.window:
        details.append(f"{counts.window} e-mail(s) sent again with the same Message-ID (SMTP crash window)")
    if down:
        details.append(f"not healthy: {down}")
    row = Row(
        label,
        sent_of(work, counts),
        sum(counts.lost.values()),
        sum(counts.duplicated.values()),
        counts.window,
        sum(dead_by_service.values()),
        recovery,
        "; ".join(details),
    )
    REPORT.append(row)
    assert all(row.sent.values()), f"every kind of work was accepted before, during or after the fault: {row.sent}"
    assert row.lost == 0, row.details
    assert row.duplicated == 0, row.details
    assert not counts.problems, counts.problems
    assert not down, f"{down} did not become healthy again on their own"
    assert dead_by_service == (dead_letters or {}), "the dead-letter queues hold the poison and nothing else"
    return row


async def test_broker_restart(system: System, mail: MailIndex) -> None:
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
    await run_scenario(system, mail, label, inject)


async def test_postgres_connections_terminated(system: System, mail: MailIndex) -> None:
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

    await run_scenario(system, mail, "postgres connections killed", inject)


@pytest.mark.parametrize("service", ["orders", "notifier", "audit", "contact"])
async def test_service_killed(system: System, mail: MailIndex, service: str) -> None:
    """SIGKILL while the service is in the middle of a batch, holding deliveries it has not acknowledged;
    then it is started again, as its supervisor would."""
    held, started_in = 0, 0.0

    async def inject() -> None:
        nonlocal held, started_in
        async with holding_messages(system, service) as held:
            await system.services[service].kill(signal.SIGKILL)
        await asyncio.sleep(1)
        started_in = await system.restart(service)

    row = await run_scenario(system, mail, f"{service} SIGKILLed", inject)
    print(
        f"{service} was killed holding {held} unacknowledged deliveries, ready {started_in:.1f} s after it was"
        f" started again; {row.details or 'all counted'}"
    )


async def test_slow_network_with_cut_connections(system: System, mail: MailIndex) -> None:
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

    await run_scenario(system, mail, "slow network, cut connections", inject)


async def test_smtp_refusing_then_failing_temporarily(system: System, smtp: SmtpServer, mail: MailIndex) -> None:
    async def inject() -> None:
        smtp.refuse_connections()
        try:
            await asyncio.sleep(30)
        finally:
            smtp.accept_connections()
        smtp.reply_for_rcpt = "451 4.3.0 try again later"
        await asyncio.sleep(5)
        smtp.reply_for_rcpt = None

    await run_scenario(system, mail, "smtp refused 30s, then 4xx", inject)


async def test_poison_messages_go_to_dead_letter_queues(system: System, mail: MailIndex) -> None:
    """Malformed JSON, a wrong schema, an unknown CloudEvents version and a 10 MB body, mixed into the
    stream, and an order with a wrong schema: each lands in the dead-letter queue of every service bound to
    its routing key, with a reason, and the orders around it are recorded."""
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
        # An order the shop got wrong: a valid CloudEvent whose data is no order (no purchaser, no items).
        (
            b'{"specversion": "1.0", "id": "p-4", "type": "order.placed", "source": "urn:poison",'
            b' "data": {"order_id": "FT-POISON-1", "currency": "USD"}}',
            "order.placed",
        ),
    ]
    # The audit service binds every routing key: it rejects all but the wrong-schema ones, valid CloudEvents
    # (which it keeps in the trail like any event).
    expected = {"notifier": 4, "audit": 3, "orders": 1}

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
        await run_scenario(system, mail, "poison messages", inject, dead_letters=expected)
    finally:
        reasons = await drain_dead_letters(system)
    assert len(reasons) == sum(expected.values())
    assert all(reasons), "every dead letter says why"


async def peek_dead_letters(system: System) -> list[str]:
    """Type and reason of every dead letter, left in place."""
    seen = []
    async for service, queue in dead_letter_queues(system):
        while (message := await queue.get(fail=False)) is not None:
            seen.append(f"{service}: {message.type} {(message.headers or {}).get('x-spm-error')}")
    return seen


async def drain_dead_letters(system: System) -> list[str]:
    reasons = []
    async for _, queue in dead_letter_queues(system):
        while (message := await queue.get(fail=False)) is not None:
            reasons.append(str((message.headers or {}).get("x-spm-error", "")))
            await message.ack()
    return reasons
