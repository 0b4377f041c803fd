"""Orders benchmark: `order.placed` published (as the shop would, confirmed) to the confirmation e-mail accepted
by Postfix's smtp-sink, the upgrade fan-out to many purchasers, and a plain aio-pika + asyncpg baseline.

    uv run python -m bench.orders [--quick] [--orders N] [--rate R] [--seconds S] [--purchasers P]
                                  [--baseline N] [--no-audit] [--no-notifier] [--fanout-only]
                                  [--mail-timeout T]

Orders, notifier (and audit) run as real processes in a throwaway world (own database and exchange,
removed afterwards). Figures are printed per stage: orders committed (order, keys and the notification
request in one transaction), requests recorded by the notifier, e-mails accepted by smtp-sink.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import orjson
from notifier.settings import Settings as NotifierSettings
from notifier.tokens import recipient_ref
from spm_common.envelope import CloudEvent
from spm_common.outbox import AmqpPublisher
from spm_common.testing.smtp import free_port
from spm_common.testing.world import AMQP_URL, World, new_world

from bench._proc import RABBITMQ, ServiceProcesses, cpu_by_command, cpu_seconds

SMTP_SINK = "/usr/sbin/smtp-sink"
# Where smtp-sink dumps the messages: memory. On ext4, a file created where thousands were just deleted (each
# phase clears the last one's) makes the kernel scan for recently freed inodes: 60-80 % of smtp-sink's CPU, up
# to 765 µs an e-mail, taken from the two cores the system under test runs on.
SINK_DIR = "/dev/shm"  # noqa: S108 (a private directory in it, made by mkdtemp)
SHOP = "https://shop.example/orders"
PUBLISHED = datetime(2026, 11, 29, 4, 0, tzinfo=UTC)
UNPUBLISHED_NONE = "SELECT (count(*) = 0)::int FROM orders.outbox WHERE published_at IS NULL"


def order(i: int, tag: str) -> dict[str, Any]:
    return {
        "order_id": f"BENCH-{tag}-{i}",
        "placed_at": "2026-11-29T03:59:12Z",
        "currency": "USD",
        "total": "49.00",
        "purchaser": {
            "name": f"Người mua {i}",
            "email": f"bench-{tag}-{i}@example.com",
            "phone": "+84 912 345 678",
            "address": {"line1": "12 Tràng Tiền", "city": "Hà Nội", "postal_code": "100000", "country": "VN"},
            "locale": "vi" if i % 2 else "en",
        },
        "items": [{"sku": "SPM-DICT-PRO", "product_name": "SPM Dictionary Pro", "quantity": 1, "unit_price": "49.00"}],
        "marketing_consent": i % 3 == 0,
    }


ShopEvent = tuple[str, str, bytes]  # type (the routing key), id, CloudEvent JSON


def cloudevent(event_type: str, data: dict[str, Any]) -> ShopEvent:
    event = CloudEvent(id=str(uuid.uuid4()), type=event_type, source=SHOP, time=PUBLISHED, data=data)
    return event.type, event.id, event.to_json()


class Shop:
    """The other systems publishing onto the exchange: CONTRACT section 3's properties, persistent, each publish
    confirmed by the broker. They run elsewhere in production but share the two cores here, so they publish the
    cheapest way there is, the services' own outbox publisher (a batch in one socket write): through aio-pika's
    `exchange.publish` they had used ~190 µs of CPU an order, a tenth of everything the system did for it."""

    def __init__(self, world: World) -> None:
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._publisher = AmqpPublisher(self._connect, world.exchange, timeout=120)

    async def _connect(self) -> aio_pika.abc.AbstractRobustConnection:
        if self._connection is None:
            self._connection = await aio_pika.connect_robust(AMQP_URL)
        return self._connection

    async def publish(self, events: list[ShopEvent]) -> None:
        """Publish `events` in one write; return once the broker confirmed them all."""
        for result in await self._publisher.publish_many([(t, i, b, t) for t, i, b in events]):
            if isinstance(result, BaseException):
                raise result

    async def __aenter__(self) -> Shop:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._publisher.close()
        if self._connection is not None:
            await self._connection.close()


async def connect_admin(world: World) -> asyncpg.Connection:
    """The benchmark's own connection to the world's database, named "bench", with custom plans: a generic plan
    of a progress query, made while the tables were nearly empty and never replaced (nothing analyzes them
    where autovacuum is off), had scanned the whole audit trail ten times a second, ~12 ms each."""
    return await asyncpg.connect(
        world.database_url, server_settings={"application_name": "bench", "plan_cache_mode": "force_custom_plan"}
    )


async def world_backends(admin: asyncpg.Connection) -> dict[int, str]:
    """The Postgres backends serving this world's database, by pid, with what each serves: a service's pool (its
    application name), "bench" (this benchmark's connection) or "listeners" (the services' LISTEN connections,
    which name no application). On a shared machine, every postgres process is other people's work too."""
    rows = await admin.fetch("SELECT pid, application_name FROM pg_stat_activity WHERE datname = current_database()")
    return {row["pid"]: row["application_name"] or "listeners" for row in rows}


async def postgres_settings(admin: asyncpg.Connection) -> str:
    """The server settings that change what a run measures. Without autovacuum (CI's configuration) no dead row
    of the queue tables is ever reclaimed, so the claims slow down over a long run as production's would not."""
    rows = await admin.fetch(
        "SELECT name, setting FROM pg_settings WHERE name IN ('autovacuum', 'synchronous_commit', 'shared_buffers')"
        " ORDER BY name"
    )
    return ", ".join(f"{row['name']} {row['setting']}" for row in rows)


async def postgres_cpu(admin: asyncpg.Connection) -> dict[int, float]:
    """CPU so far of each of this world's Postgres backends, by pid (one gone meanwhile reads as 0, left out)."""
    return {pid: used for pid in await world_backends(admin) if (used := cpu_seconds(pid))}


class Sink:
    """smtp-sink dumping each accepted message to a file; the file's mtime is when it was accepted."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="spm-bench-sink-", dir=SINK_DIR if os.path.isdir(SINK_DIR) else None))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [SMTP_SINK, "-u", "root", "-d", f"{self.dir}/%M.", "127.0.0.1:" + str(self.port), "1024"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def count(self) -> int:
        return sum(1 for _ in os.scandir(self.dir))

    def accepted(self) -> dict[str, float]:
        """Recipient -> time accepted."""
        found = {}
        for entry in os.scandir(self.dir):
            with open(entry.path, "rb") as handle:
                head = handle.read(4096)
            for line in head.splitlines():
                if line.startswith(b"X-Rcpt-Args:") or line.lower().startswith(b"to:"):
                    address = line.split(b"<")[-1].split(b">")[0].strip().decode()
                    found[address] = entry.stat().st_mtime
                    break
        return found

    def clear(self) -> None:
        for entry in os.scandir(self.dir):
            os.unlink(entry.path)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


class Services(ServiceProcesses):
    def __init__(self, world: World, sink_port: int, audit: bool, notifier: bool = True) -> None:
        super().__init__()
        self.world = world
        self.env = {
            **os.environ,
            **world.env(
                SPM_SMTP_PORT=str(sink_port),
                SPM_LOG_LEVEL="warning",
                SPM_OUTBOX_POLL_SECONDS="1",
                SPM_ORDERS_FANOUT_BATCH="1000",
            ),
        }
        self.names = ["orders"] + (["notifier"] if notifier else []) + (["audit"] if audit else [])

    async def start(self) -> None:
        ports = {name: free_port() for name in self.names}
        await self.start_all(
            {name: {**self.env, f"SPM_{name.upper()}_PORT": str(ports[name])} for name in ports}, ports
        )


async def phase_cpu(admin: asyncpg.Connection, pids: dict[str, int], sink: Sink) -> dict[str, float]:
    """CPU seconds so far of each service, this world's Postgres backends (each by pid, summed by `cpu_used`),
    RabbitMQ, smtp-sink and this process (the publisher)."""
    assert sink.process is not None
    return {
        **{name: cpu_seconds(pid) for name, pid in pids.items()},
        **{f"postgres:{pid}": used for pid, used in (await postgres_cpu(admin)).items()},
        "rabbitmq": cpu_by_command(RABBITMQ)[RABBITMQ],
        "smtp-sink": cpu_seconds(sink.process.pid),
        "publisher": cpu_seconds(os.getpid()),
    }


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds used between two `phase_cpu` readings, the Postgres backends summed (one that ended meanwhile
    is missed; one that began counts from zero)."""
    used: dict[str, float] = {}
    for name, seconds in after.items():
        key = "postgres" if name.startswith("postgres:") else name
        used[key] = used.get(key, 0.0) + seconds - before.get(name, 0.0)
    return used


def cpu_report(used: dict[str, float], count: int) -> str:
    total = sum(used.values()) / count
    cores = os.cpu_count() or 1
    return (
        ", ".join(f"{name} {seconds / count * 1e6:,.0f}" for name, seconds in used.items())
        + f"; all {total * 1e6:,.0f} µs (at most {cores / total:,.0f} orders/s on {cores} cores)"
    )


async def publish_burst(shop: Shop, messages: list[ShopEvent]) -> float:
    """Publish everything as fast as confirms allow (windows of 200 in flight); return the time taken."""
    started = time.perf_counter()
    for start in range(0, len(messages), 200):
        await shop.publish(messages[start : start + 200])
    return time.perf_counter() - started


async def publish_paced(shop: Shop, messages: list[ShopEvent], rate: int, sent_at: list[float]) -> float:
    """Publish at `rate` per second in ticks of 20 ms, recording each message's wall-clock publish time; a tick
    does not wait for the confirms of the one before (a shop's orders do not wait for each other)."""
    per_tick = max(1, rate // 50)
    confirming: list[asyncio.Future[None]] = []
    started = time.perf_counter()
    for n, start in enumerate(range(0, len(messages), per_tick)):
        delay = started + n * 0.02 - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        chunk = messages[start : start + per_tick]
        now = time.time()
        sent_at.extend([now] * len(chunk))
        confirming.append(asyncio.ensure_future(shop.publish(chunk)))
    await asyncio.gather(*confirming)
    return time.perf_counter() - started


# Counting walks every row of the run: twenty times a second, it had been a share of Postgres's work (~1 %
# of a 20-second phase's resolution is enough).
COUNT_EVERY_SECONDS = 0.2


async def wait_count(admin: asyncpg.Connection, query: str, target: int, timeout: float, *args: Any) -> float | None:
    """Seconds until `query` counts `target`, or None after `timeout`."""
    started = time.perf_counter()
    while True:
        if await admin.fetchval(query, *args) >= target:
            return time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            return None
        await asyncio.sleep(COUNT_EVERY_SECONDS)


async def wait_mail(sink: Sink, target: int, timeout: float) -> float | None:
    started = time.perf_counter()
    last, last_change = -1, started
    while True:
        count = sink.count()
        if count >= target:
            return time.perf_counter() - started
        now = time.perf_counter()
        if count != last:
            last, last_change = count, now
        if now - started > timeout or (now - last_change > 15 and now - started > 30):
            print(f"    e-mail: {count}/{target} accepted after {now - started:.1f} s (stalled or too slow)")
            return None
        await asyncio.sleep(0.2)


def quantiles(values: list[float]) -> str:
    if not values:
        return "n/a"
    values = sorted(values)
    q = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else values * 99
    return f"p50 {q[49] * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms, max {values[-1] * 1000:.0f} ms"


def rate(count: int, seconds: float | None) -> str:
    return f"{count / seconds:,.0f}/s ({count:,} in {seconds:.1f} s)" if seconds else "n/a (did not finish)"


async def bench_orders(
    world: World,
    admin: asyncpg.Connection,
    sink: Sink,
    burst: int,
    paced_rate: int,
    seconds: int,
    mail_timeout: float,
    pids: dict[str, int],
    notifier: bool = True,
) -> float | None:
    """Returns the burst's orders committed per second."""
    async with Shop(world) as shop:
        # 1. Burst: everything published at once; how fast is it all committed, recorded, mailed?
        tag = uuid.uuid4().hex[:6]
        messages = [cloudevent("order.placed", order(i, tag)) for i in range(burst)]
        sink.clear()
        orders_pid = pids["orders"]
        cpu_before = cpu_seconds(orders_pid)
        phase_before = await phase_cpu(admin, pids, sink)
        started = time.perf_counter()
        published = await publish_burst(shop, messages)
        committed = await wait_count(
            admin, "SELECT count(*) FROM orders.orders WHERE order_id LIKE $1", burst, 600, f"BENCH-{tag}-%"
        )
        committed_total = time.perf_counter() - started if committed is not None else None
        cpu_committed = cpu_seconds(orders_pid) - cpu_before
        relayed = await wait_count(admin, UNPUBLISHED_NONE, 1, 600)
        relayed_total = time.perf_counter() - started if relayed is not None else None
        cpu_relayed = cpu_seconds(orders_pid) - cpu_before
        recorded = notifier and await wait_count(
            admin,
            "SELECT count(*) FROM notifier.deliveries WHERE template = 'order-confirmation'",
            burst,
            120,
        )
        recorded_total = time.perf_counter() - started if recorded else None
        mailed = await wait_mail(sink, burst, mail_timeout) if notifier else None
        mailed_total = time.perf_counter() - started if mailed is not None else None
        used = cpu_used(phase_before, await phase_cpu(admin, pids, sink))
        print(f"  burst of {burst:,} order.placed (publishing alone: {rate(burst, published)})")
        print(f"    orders committed (order, keys, confirmation request): {rate(burst, committed_total)}")
        print(f"    their events published by the orders outbox relay:    {rate(burst, relayed_total)}")
        print(
            f"    orders process CPU: {cpu_committed / burst * 1e6:,.0f} µs an order until committed,"
            f" {cpu_relayed / burst * 1e6:,.0f} µs until its events are published"
        )
        print(f"    confirmation requests recorded by the notifier:      {rate(burst, recorded_total)}")
        print(f"    confirmation e-mails accepted by smtp-sink:          {rate(burst, mailed_total)}")
        print(f"    CPU an order, the whole phase (µs): {cpu_report(used, burst)}")

        # 2. Paced: a steady rate for a while; latency of each order.
        tag = uuid.uuid4().hex[:6]
        count = paced_rate * seconds
        messages = [cloudevent("order.placed", order(i, tag)) for i in range(count)]
        sent_at: list[float] = []
        sink.clear()
        phase_before = await phase_cpu(admin, pids, sink)
        took = await publish_paced(shop, messages, paced_rate, sent_at)
        await wait_count(
            admin, "SELECT count(*) FROM orders.orders WHERE order_id LIKE $1", count, 600, f"BENCH-{tag}-%"
        )
        rows = await admin.fetch(
            "SELECT order_id, extract(epoch FROM recorded_at)::float8 AS at FROM orders.orders WHERE order_id LIKE $1",
            f"BENCH-{tag}-%",
        )
        by_index = {int(r["order_id"].rsplit("-", 1)[1]): r["at"] for r in rows}
        commit_latency = [by_index[i] - sent_at[i] for i in range(count) if i in by_index]
        last_commit = max(by_index.values())
        print(f"  steady {paced_rate:,}/s for {seconds} s ({count:,} orders, published in {took:.1f} s)")
        print(f"    committed: {rate(count, last_commit - sent_at[0])}; latency {quantiles(commit_latency)}")
        mailed = await wait_mail(sink, count, mail_timeout) if notifier else None
        used = cpu_used(phase_before, await phase_cpu(admin, pids, sink))
        if mailed is not None:
            accepted = sink.accepted()
            latency = [
                accepted[f"bench-{tag}-{i}@example.com"] - sent_at[i]
                for i in range(count)
                if f"bench-{tag}-{i}@example.com" in accepted
            ]
            print(f"    e-mailed:  {rate(count, max(accepted.values()) - sent_at[0])}; latency {quantiles(latency)}")
            # Sustained or slowly falling behind: a queue that grows shows as a later fifth slower than the first.
            fifth = len(latency) // 5
            if fifth:
                print(
                    f"    e-mail latency, orders of the first fifth: {quantiles(latency[:fifth])};"
                    f" of the last fifth: {quantiles(latency[-fifth:])}"
                )
        print(f"    CPU an order, the whole phase (µs): {cpu_report(used, count)}")
    return burst / committed_total if committed_total else None


async def bench_fanout(
    world: World,
    admin: asyncpg.Connection,
    sink: Sink,
    purchasers: int,
    mail_timeout: float,
    pids: dict[str, int],
    notifier: bool = True,
) -> None:
    tag = uuid.uuid4().hex[:6]
    started = time.perf_counter()
    first_id = await admin.fetchval("SELECT coalesce(max(id), 0) + 1 FROM orders.purchasers")
    placed = datetime.now(UTC)
    await admin.copy_records_to_table(
        "purchasers",
        schema_name="orders",
        columns=["id", "email", "name", "locale", "last_order_at"],
        records=(
            (first_id + i, f"fan-{tag}-{i}@example.com", f"Người mua {i}", "vi" if i % 2 else "en", placed)
            for i in range(purchasers)
        ),
    )
    await admin.execute("SELECT setval('orders.purchasers_id_seq', (SELECT max(id) FROM orders.purchasers))")
    await admin.copy_records_to_table(
        "purchases",
        schema_name="orders",
        columns=["sku", "purchaser_id", "last_placed_at"],
        records=(("SPM-OCR", first_id + i, placed) for i in range(purchasers)),
    )
    if notifier:
        # The notifier sends upgrade notices only to addresses it knows as purchasers (it learnt them from
        # their order confirmations); these purchasers skipped that step.
        key = world.settings(NotifierSettings).recipient_key()
        await admin.copy_records_to_table(
            "recipients",
            schema_name="notifier",
            columns=["recipient_ref", "purchaser_since"],
            records=((recipient_ref(f"fan-{tag}-{i}@example.com", key), placed) for i in range(purchasers)),
        )
    print(f"  {purchasers:,} purchasers of SPM-OCR seeded with COPY in {time.perf_counter() - started:.1f} s")

    release = {
        "release_id": f"SPM-OCR-{tag}",
        "sku": "SPM-OCR",
        "version": "3.1.0",
        "released_at": "2026-11-29T00:00:00Z",
        "title": "SPM OCR 3.1",
        "notes_url": "https://spmgroup.vn/ocr/3.1",
        "download_url": "https://spmgroup.vn/dl/ocr-3.1.exe",
        "eligible_since": None,
        "new_registration": True,
    }
    sink.clear()
    before = notifier and await admin.fetchval(
        "SELECT count(*) FROM notifier.deliveries WHERE template = 'upgrade-notice'"
    )
    async with Shop(world) as shop:
        cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
        backends = await postgres_cpu(admin)
        started = time.perf_counter()
        await shop.publish([cloudevent("upgrade.released", release)])
    done = await wait_count(
        admin,
        "SELECT count(*) FROM orders.fanouts WHERE key = $1 AND finished_at IS NOT NULL",
        1,
        900,
        release["release_id"],
    )
    fanned = time.perf_counter() - started if done is not None else None
    relayed = await wait_count(admin, UNPUBLISHED_NONE, 1, 900)
    relayed_total = time.perf_counter() - started if relayed is not None else None
    recorded = notifier and await wait_count(
        admin,
        "SELECT count(*) FROM notifier.deliveries WHERE template = 'upgrade-notice'",
        before + purchasers,
        900,
    )
    recorded_total = time.perf_counter() - started if recorded else None
    mailed = await wait_mail(sink, purchasers, mail_timeout) if notifier else None
    mailed_total = time.perf_counter() - started if mailed is not None else None
    if notifier:
        # The last notification.sent events are published a moment after their e-mails left.
        await wait_count(admin, UNPUBLISHED_NONE.replace("orders.", "notifier."), 1, 60)
    cpu = {name: cpu_seconds(pid) - cpu[name] for name, pid in pids.items()}
    # Backends that ended meanwhile are missed; those that began count from zero.
    cpu["postgres"] = sum(used - backends.get(pid, 0.0) for pid, used in (await postgres_cpu(admin)).items())
    print(f"  upgrade.released (new registration) to {purchasers:,} purchasers")
    print(f"    fan-out committed (keys issued, requests enqueued): {rate(purchasers, fanned)}")
    print(f"    requests published by the outbox relay:             {rate(purchasers, relayed_total)}")
    print(f"    requests recorded by the notifier:                  {rate(purchasers, recorded_total)}")
    print(f"    e-mails accepted by smtp-sink:                      {rate(purchasers, mailed_total)}")
    print(
        "    CPU a purchaser, whole fan-out: "
        + ", ".join(f"{name} {seconds / purchasers * 1e6:,.0f} µs ({seconds:.1f} s)" for name, seconds in cpu.items())
    )


async def bench_baseline(world: World, admin: asyncpg.Connection, count: int) -> float:
    """A plain aio-pika consumer inserting the same order with asyncpg, one transaction per message."""
    await admin.execute(
        "CREATE SCHEMA IF NOT EXISTS baseline; CREATE TABLE IF NOT EXISTS baseline.orders ("
        " id bigserial PRIMARY KEY, source text NOT NULL, order_id text NOT NULL, email text NOT NULL,"
        " name text NOT NULL, total numeric NOT NULL, items jsonb NOT NULL, UNIQUE (source, order_id))"
    )
    pool = await asyncpg.create_pool(world.database_url, min_size=2, max_size=4)
    connection = await aio_pika.connect(AMQP_URL)
    done = asyncio.Event()
    seen = 0
    tag = uuid.uuid4().hex[:6]
    try:
        async with connection:
            channel = await connection.channel()  # it consumes; the Shop publishes
            await channel.set_qos(prefetch_count=100)
            exchange = await channel.get_exchange(world.exchange, ensure=False)
            queue = await channel.declare_queue(f"{world.exchange}.baseline", durable=True, auto_delete=True)
            await queue.bind(exchange, routing_key="bench.baseline")

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                nonlocal seen
                event = orjson.loads(message.body)
                data = event["data"]
                async with pool.acquire() as conn, conn.transaction():
                    await conn.execute(
                        "INSERT INTO baseline.orders (source, order_id, email, name, total, items)"
                        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                        event["source"],
                        data["order_id"],
                        data["purchaser"]["email"],
                        data["purchaser"]["name"],
                        data["total"],
                        orjson.dumps(data["items"]).decode(),
                    )
                await message.ack()
                seen += 1
                if seen == count:
                    done.set()

            await queue.consume(on_message)
            messages = [cloudevent("bench.baseline", order(i, tag)) for i in range(count)]
            started = time.perf_counter()
            async with Shop(world) as shop:
                await publish_burst(shop, messages)
            await asyncio.wait_for(done.wait(), 600)
            took = time.perf_counter() - started
        print(f"  baseline (aio-pika + asyncpg, one transaction per message): {rate(count, took)}")
    finally:
        await pool.close()
    return count / took


async def run(args: argparse.Namespace) -> None:
    world = new_world()
    sink = Sink()
    sink.start()
    world.smtp_port = sink.port
    await world.create()
    services = Services(world, sink.port, audit=not args.no_audit, notifier=not args.no_notifier)
    if args.no_notifier:
        args.mail_timeout = 0
    admin = await connect_admin(world)
    try:
        await services.start()
        print(f"orders benchmark: services {', '.join(services.names)} as processes; smtp-sink on {sink.port}")
        print(f"  load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
        print(f"  Postgres: {await postgres_settings(admin)}")
        notifier = not args.no_notifier
        pids = {name: process.pid for name, process in services.processes.items()}
        if args.fanout_only:
            await bench_fanout(world, admin, sink, args.purchasers, args.mail_timeout, pids, notifier)
            print(f"  load average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
            return
        committed = await bench_orders(
            world,
            admin,
            sink,
            args.orders,
            args.rate,
            args.seconds,
            args.mail_timeout,
            pids,
            notifier,
        )
        await bench_fanout(world, admin, sink, args.purchasers, args.mail_timeout, pids, notifier)
        services.stop()  # the baseline runs alone (the audit would otherwise consume its messages too)
        baseline = await bench_baseline(world, admin, args.baseline)
        if committed:
            print(f"  burst orders committed / baseline, same run: {committed / baseline:.2f}")
        print(f"  load average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        await tear_down(world, admin, services, sink)


async def tear_down(world: World, admin: asyncpg.Connection, services: Services, sink: Sink) -> None:
    """Stop what a benchmark started and remove its world, the baseline's queue included."""
    await admin.close()
    services.stop()
    sink.stop()
    await world.destroy()
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        with suppress(Exception):
            await channel.queue_delete(f"{world.exchange}.baseline")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--orders", type=int, default=20_000, help="orders in the burst")
    parser.add_argument("--rate", type=int, default=1000, help="orders per second in the steady phase")
    parser.add_argument("--seconds", type=int, default=15, help="length of the steady phase")
    parser.add_argument("--purchasers", type=int, default=100_000, help="purchasers in the upgrade fan-out")
    parser.add_argument("--baseline", type=int, default=10_000, help="orders through the baseline consumer")
    parser.add_argument("--no-audit", action="store_true", help="run without the audit service")
    parser.add_argument(
        "--no-notifier", action="store_true", help="run without the notifier: the orders stage alone, no e-mail"
    )
    parser.add_argument("--fanout-only", action="store_true", help="only the upgrade fan-out (no burst, no baseline)")
    parser.add_argument("--mail-timeout", type=float, default=180, help="seconds to wait for e-mail at most")
    args = parser.parse_args()
    if args.quick:
        args.orders, args.seconds, args.rate, args.purchasers, args.baseline = 500, 3, 200, 2000, 500
        args.mail_timeout = min(args.mail_timeout, 20)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
