"""Pipeline benchmark: `order.placed` published as the shop would, until the confirmation e-mail is accepted by
Postfix's smtp-sink and the order's events are in the audit trail, with all four services running.

    uv run python -m bench.pipeline [--quick] [--orders N] [--rate R] [--mail-timeout T]

Contact, orders, notifier and audit run as real processes in a throwaway world (own database and exchange,
removed afterwards), with smtp-sink on a free port dumping each accepted message to a file. Two phases:
full speed (N orders published as fast as publisher confirms allow) and half of the rate full speed reached
(a paced publisher, N/2 orders; `--rate` sets another). Each phase starts once the services are quiet
(queues and outboxes empty, nothing consumed for two seconds), so what one phase left behind does not
queue in front of the next. Latency of an order = the accepted message file's mtime (smtp-sink's
acceptance) minus the wall-clock time its publish started; it is broken down into the steps of the order's
way by the timestamps the services record anyway (the start of each transaction: the orders' inbox, the
relay's claim of `notification.requested`, the notifier's inbox, the sender's claim, the outcome's mark; and
the audit trail's entries), and the CPU each service used during the phase, per order (utime + stime from
/proc, from the first publish until the phase is done), as well as Postgres (every postgres process, exited
backends included, so other databases' work too), RabbitMQ (beam.smp), smtp-sink and this process (the
publisher), their total and the rate it allows on the machine's cores, beside what the whole machine used
(/proc/stat: the difference is other people's work). Then, in the same run with the services stopped,
the plain aio-pika + asyncpg baseline of bench/orders.py, and each service's peak memory (VmHWM).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import asyncpg
from spm_common.testing.world import AMQP_URL, World, new_world

from bench._proc import POSTGRES, RABBITMQ, cpu_by_command, machine_cpu
from bench._proc import cpu_seconds as process_cpu
from bench.orders import (
    Services,
    Shop,
    ShopEvent,
    Sink,
    bench_baseline,
    cloudevent,
    connect_admin,
    order,
    postgres_settings,
    tear_down,
    world_backends,
)

WINDOW = 200
# The orders' inbox rows since the phase began (an order and its inbox row commit together), by index; and
# when the last of them began its transaction. Not by `source`: without statistics (busy runs had none yet)
# Postgres took the primary key for it and walked every order of the run, ~27 ms a count at 30,000.
COMMITTED = "SELECT count(*) FROM orders.inbox WHERE received_at >= $1 AND event_type = 'order.placed'"
LAST_COMMITTED = (
    "SELECT extract(epoch FROM max(received_at))::float8 FROM orders.inbox"
    " WHERE received_at >= $1 AND event_type = 'order.placed'"
)
# The trail's entries since the last look, by the primary key even without statistics (no autovacuum had
# analyzed the table yet in busy runs, and `seq > $1` alone was then a parallel scan of the whole trail, ten
# times a second: ~15 ms each at 100,000 entries).
AUDITED_SINCE = (
    "SELECT max(seq) AS last, count(*) FILTER (WHERE event_type = 'order.placed') AS placed,"
    " count(*) FILTER (WHERE event_type = 'order.recorded') AS recorded"
    " FROM (SELECT seq, event_type FROM audit.entries WHERE seq > $1 ORDER BY seq LIMIT 10000) AS new"
)
# Quiet means: no event waiting in any service's queue or outbox, no e-mail due, nothing newly consumed for
# QUIET_LOOKS looks in a row (longer than a big audit batch takes to commit).
QUIET_LOOKS, QUIET_EVERY_SECONDS = 4, 0.5
QUEUES = ("contact", "orders", "notifier", "audit")
BUSY = """
SELECT (SELECT count(*) FROM orders.outbox WHERE published_at IS NULL)
     + (SELECT count(*) FROM notifier.outbox WHERE published_at IS NULL)
     + (SELECT count(*) FROM audit.outbox WHERE published_at IS NULL)
     + (SELECT count(*) FROM contact.outbox WHERE published_at IS NULL)
     + (SELECT count(*) FROM notifier.deliveries WHERE status IN ('pending', 'sending') AND next_attempt_at <= now())
       AS waiting,
       ARRAY[(SELECT max(received_at) FROM orders.inbox), (SELECT max(received_at) FROM notifier.inbox),
             (SELECT max(received_at) FROM contact.inbox), (SELECT max(received_at) FROM audit.inbox)]::text
       || (SELECT coalesce(max(seq), 0) FROM audit.entries)::text AS last
"""


@dataclass
class Phase:
    """What one phase measured; times are seconds from its first publish, None if not reached in time."""

    name: str
    count: int
    published: float = 0.0
    committed: float | None = None
    mailed: float | None = None
    audited: float | None = None
    latencies: list[float] = field(default_factory=list)
    missing_mail: int = 0
    stages: list[tuple[str, list[float]]] = field(default_factory=list)
    settled: float | None = 0.0  # seconds waited for the services to go quiet before the phase
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds each service used during the phase
    others: dict[str, float] = field(default_factory=dict)  # and the rest of the pipeline (Postgres, ...)
    machine: float = 0.0  # CPU seconds every process of the machine used meanwhile (/proc/stat)
    own_postgres: dict[str, float] = field(default_factory=dict)  # CPU seconds of this run's database's
    # Postgres backends, by what they serve (see `world_backends`)

    @property
    def done(self) -> float | None:
        if self.mailed is None or self.audited is None:
            return None
        return max(self.mailed, self.audited)


async def publish(shop: Shop, messages: list[ShopEvent], rate: float | None) -> list[float]:
    """Publish as fast as confirms allow (windows of WINDOW awaiting their confirms), or each message at its turn
    for `rate` per second, whatever the confirms of those before take (a shop's orders do not wait for them: a
    message held back would start its latency late). Returns each message's wall-clock publish time."""
    sent_at: list[float] = []
    confirming: list[asyncio.Future[Any]] = []
    started = time.perf_counter()
    sent = 0
    while sent < len(messages):
        due = len(messages) if rate is None else min(len(messages), int((time.perf_counter() - started) * rate) + 1)
        if due <= sent:
            assert rate is not None  # without a rate every message is due at once
            await asyncio.sleep(max(0.001, started + sent / rate - time.perf_counter()))
            continue
        chunk = messages[sent : min(due, sent + WINDOW)]
        sent_at.extend([time.time()] * len(chunk))
        confirms = asyncio.ensure_future(shop.publish(chunk))
        if rate is None:
            await confirms
        else:
            confirming.append(confirms)
        sent += len(chunk)
    await asyncio.gather(*confirming)
    return sent_at


def pipeline_cpu(services: Services, sink: Sink) -> tuple[dict[str, float], dict[str, float], float]:
    """CPU seconds so far: each service; Postgres, RabbitMQ, smtp-sink and this process (the publisher);
    the whole machine."""
    brokers = cpu_by_command(POSTGRES, RABBITMQ)
    assert sink.process is not None
    others = {
        "postgres": brokers[POSTGRES],
        "rabbitmq": brokers[RABBITMQ],
        "smtp-sink": process_cpu(sink.process.pid),
        "publisher": process_cpu(os.getpid()),
    }
    return {n: process_cpu(p.pid) for n, p in services.processes.items()}, others, machine_cpu()


async def settle(world: World, admin: asyncpg.Connection, timeout: float = 300) -> float | None:
    """Wait until the services are quiet (what the last phase left behind, such as the outcomes of its
    e-mails on their way to the trail, would otherwise queue in front of the next phase's orders); return
    how long that took, or None if they were still busy after `timeout`."""
    started = time.perf_counter()
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        previous, quiet = None, 0
        while time.perf_counter() - started < timeout:
            queued = 0
            for service in QUEUES:  # messages ready; those a consumer holds show up as its next commit
                queue = await channel.declare_queue(f"{world.exchange}.{service}", passive=True)
                queued += queue.declaration_result.message_count or 0
            row = await admin.fetchrow(BUSY)
            assert row is not None  # a SELECT without FROM: always one row
            idle = queued == 0 and row["waiting"] == 0
            quiet = quiet + 1 if idle and row["last"] == previous else 0
            if quiet == QUIET_LOOKS:
                return max(0.0, time.perf_counter() - started - QUIET_LOOKS * QUIET_EVERY_SECONDS)
            previous = row["last"] if idle else None
            await asyncio.sleep(QUIET_EVERY_SECONDS)
    return None


async def run_phase(
    world: World,
    admin: asyncpg.Connection,
    sink: Sink,
    services: Services,
    name: str,
    count: int,
    rate: float | None,
    timeout: float,
) -> Phase:
    phase = Phase(name, count)
    tag = uuid.uuid4().hex[:6]
    messages = [cloudevent("order.placed", order(i, tag)) for i in range(count)]
    phase.settled = await settle(world, admin)
    sink.clear()
    # What the loop below asks costs little: the trail is counted from where the last look left off, the
    # orders once a second until they are all in (counting them ten times a second cost Postgres ~1.4 ms of CPU
    # an order at 90 orders/s, a tenth of a core), smtp-sink's files once every order is in.
    audited_seq = await admin.fetchval("SELECT coalesce(max(seq), 0) FROM audit.entries")
    placed = recorded = committed = mailed = 0
    since = await admin.fetchval("SELECT now()")
    async with Shop(world) as shop:
        backends = await world_backends(admin)
        own_postgres_before = {pid: process_cpu(pid) for pid in backends}
        cpu_before, others_before, machine_before = pipeline_cpu(services, sink)
        started, started_at = time.perf_counter(), time.time()
        publisher = asyncio.create_task(publish(shop, messages, rate))
        counted = -1.0
        last_progress, last_seen = started, (-1, -1, -1)
        while True:
            await asyncio.sleep(0.1)
            now = time.perf_counter() - started
            if committed < count and now - counted >= 1:
                committed, counted = await admin.fetchval(COMMITTED, since), now
            row = await admin.fetchrow(AUDITED_SINCE, audited_seq)
            assert row is not None  # an aggregate without GROUP BY: always one row
            if row["last"] is not None:
                audited_seq, placed, recorded = row["last"], placed + row["placed"], recorded + row["recorded"]
            if committed >= count:  # an e-mail goes after its order
                mailed = sink.count()
            if phase.committed is None and committed >= count:
                phase.committed = await admin.fetchval(LAST_COMMITTED, since) - started_at
            if phase.audited is None and placed >= count and recorded >= count:
                phase.audited = now
            if phase.mailed is None and mailed >= count:
                phase.mailed = now
            if phase.done is not None:
                break
            seen = (committed, min(placed, recorded), mailed)
            if seen != last_seen:
                last_seen, last_progress = seen, now
            if now > timeout or (publisher.done() and now - last_progress > 30):
                print(
                    f"    {name}: gave up after {now:.0f} s: {committed}/{count} committed, "
                    f"{min(placed, recorded)}/{count} in the trail, {sink.count()}/{count} e-mails"
                )
                break
        cpu_after, others_after, machine_after = pipeline_cpu(services, sink)
        phase.cpu = {n: cpu_after[n] - cpu_before[n] for n in cpu_after}
        phase.others = {n: others_after[n] - others_before[n] for n in others_after}
        phase.machine = machine_after - machine_before
        # A backend that started meanwhile counts whole; one that ended is missed (the pools keep theirs).
        backends |= await world_backends(admin)
        for pid, application in backends.items():
            used = process_cpu(pid) - own_postgres_before.get(pid, 0.0)
            phase.own_postgres[application] = phase.own_postgres.get(application, 0.0) + used
        sent_at = await publisher
        phase.published = max(sent_at) - min(sent_at) if sent_at else 0.0
    accepted = sink.accepted()
    mailed_at: dict[int, float] = {}
    for i, t in enumerate(sent_at):
        at = accepted.get(f"bench-{tag}-{i}@example.com")
        if at is None:
            phase.missing_mail += 1
        else:
            phase.latencies.append(at - t)
            mailed_at[i] = at
    phase.stages = await stages(admin, tag, sent_at, mailed_at)
    return phase


# Per order, when each step began, from the services' own tables (each a transaction's start, `now()`).
STAGES = """
SELECT split_part(o.order_id, '-', 3)::int AS i,
       extract(epoch FROM oi.received_at) AS consumed,
       extract(epoch FROM rq.published_at) AS relayed,
       extract(epoch FROM ni.received_at) AS recorded,
       extract(epoch FROM d.last_attempt_at) AS claimed,
       extract(epoch FROM d.sent_at) AS marked,
       extract(epoch FROM rc.published_at) AS recorded_relayed,
       extract(epoch FROM ap.recorded_at) AS audit_placed,
       extract(epoch FROM ar.recorded_at) AS audit_recorded
FROM orders.orders o
JOIN orders.inbox oi ON oi.event_id = o.event_id
JOIN orders.outbox rq ON rq.event_type = 'notification.requested'
     AND convert_from(rq.body, 'UTF8')::jsonb #>> '{data,reference}' = 'order:' || o.id
JOIN orders.outbox rc ON rc.event_type = 'order.recorded'
     AND convert_from(rc.body, 'UTF8')::jsonb #>> '{data,id}' = o.id::text
LEFT JOIN notifier.inbox ni ON ni.event_id = rq.event_id
LEFT JOIN notifier.deliveries d ON d.request_event_id = rq.event_id
LEFT JOIN audit.entries ap ON ap.event_id = o.event_id AND ap.event_type = 'order.placed'
LEFT JOIN audit.entries ar ON ar.event_id = rc.event_id AND ar.event_type = 'order.recorded'
WHERE o.order_id LIKE $1
"""


async def stages(
    admin: asyncpg.Connection, tag: str, sent_at: list[float], mailed_at: dict[int, float]
) -> list[tuple[str, list[float]]]:
    """The latency of each step of an order's way, from the timestamps the services record anyway."""
    steps: list[tuple[str, str, str]] = [
        ("published -> orders' inbox transaction", "published", "consumed"),
        ("  -> relay claimed notification.requested", "consumed", "relayed"),
        ("  -> notifier's intake transaction", "relayed", "recorded"),
        ("  -> sender claimed the delivery", "recorded", "claimed"),
        ("  -> accepted by smtp-sink", "claimed", "mailed"),
        ("  -> outcome marked sent", "mailed", "marked"),
        ("published -> order.placed audited", "published", "audit_placed"),
        ("relay claimed order.recorded -> audited", "recorded_relayed", "audit_recorded"),
    ]
    found: list[tuple[str, list[float]]] = [(name, []) for name, _, _ in steps]
    for row in await admin.fetch(STAGES, f"BENCH-{tag}-%"):
        times = {**dict(row), "published": sent_at[row["i"]], "mailed": mailed_at.get(row["i"])}
        for (_, start, end), (_, values) in zip(steps, found, strict=True):
            if times[start] is not None and times[end] is not None:
                values.append(float(times[end]) - float(times[start]))
    return found


def per_second(count: int, seconds: float | None) -> str:
    return f"{count / seconds:,.0f}/s ({seconds:.1f} s)" if seconds else "not reached"


def latency(values: list[float]) -> str:
    if len(values) < 2:
        return "n/a"
    q = statistics.quantiles(values, n=1000, method="inclusive")
    return f"p50 {q[499] * 1000:,.0f} ms, p99 {q[989] * 1000:,.0f} ms, p99.9 {q[998] * 1000:,.0f} ms"


def report(phase: Phase) -> None:
    quiet = f"after {phase.settled:.1f} s" if phase.settled is not None else "not quiet after 300 s; started anyway"
    print(f"  {phase.name}: {phase.count:,} order.placed (services quiet {quiet})")
    print(f"    published (confirms):                 {per_second(phase.count, phase.published)}")
    print(f"    orders committed:                     {per_second(phase.count, phase.committed)}")
    print(f"    e-mails accepted by smtp-sink:        {per_second(phase.count, phase.mailed)}")
    print(f"    order.placed + order.recorded audited: {per_second(phase.count, phase.audited)}")
    print(f"    end to end (e-mail and trail):        {per_second(phase.count, phase.done)}")
    missing = f" ({phase.missing_mail} e-mails not found)" if phase.missing_mail else ""
    print(f"    latency publish -> e-mail accepted:   {latency(phase.latencies)}{missing}")
    cpu = ", ".join(f"{name} {seconds / phase.count * 1e6:,.0f}" for name, seconds in phase.cpu.items())
    print(f"    CPU an order (µs, until done):        {cpu}")
    others = ", ".join(f"{name} {seconds / phase.count * 1e6:,.0f}" for name, seconds in phase.others.items())
    print(f"      and the rest of the pipeline (µs):  {others}")
    own = ", ".join(
        f"{name} {seconds / phase.count * 1e6:,.0f}" for name, seconds in sorted(phase.own_postgres.items())
    )
    print(
        f"      of Postgres, this run's database:   {sum(phase.own_postgres.values()) / phase.count * 1e6:,.0f} ({own})"
    )
    total = (sum(phase.cpu.values()) + sum(phase.others.values())) / phase.count
    cores = os.cpu_count() or 1
    print(
        f"      all of it: {total * 1e6:,.0f} µs an order, so at most {cores / total:,.0f} orders/s on {cores} cores"
        f" (the whole machine used {phase.machine / phase.count * 1e6:,.0f} µs an order meanwhile)"
    )
    print("    where it goes (each step from the start of the one before; transaction starts and smtp-sink's files):")
    for name, values in phase.stages:
        print(f"      {name:<44} {latency(values)}")


def peak_memory(pid: int) -> str:
    """VmHWM (peak resident set) of a live process, from /proc."""
    with suppress(OSError), open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return f"{int(line.split()[1]) / 1024:,.0f} MB"
    return "n/a"


def cpu_since_start(pid: int) -> str:
    """User + system CPU time of a live process since it started, from /proc."""
    with suppress(OSError):
        return f"{process_cpu(pid):,.1f} s"
    return "n/a"


async def run(args: argparse.Namespace) -> None:
    world = new_world()
    sink = Sink()
    sink.start()
    world.smtp_port = sink.port
    await world.create()
    services = Services(world, sink.port, audit=True)
    services.names = ["contact", *services.names]
    admin = await connect_admin(world)
    try:
        await services.start()
        print(f"pipeline benchmark: {', '.join(services.names)} as processes; smtp-sink on port {sink.port}")
        print(f"  load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
        print(f"  Postgres: {await postgres_settings(admin)}")
        full = await run_phase(world, admin, sink, services, "full speed", args.orders, None, args.mail_timeout)
        report(full)
        half_rate = args.rate or (args.orders / full.done / 2 if full.done else 250)
        half_count = max(200, args.orders // 2)
        half = await run_phase(
            world,
            admin,
            sink,
            services,
            f"{'paced' if args.rate else 'half speed'} ({half_rate:,.0f}/s)",
            half_count,
            half_rate,
            args.mail_timeout,
        )
        report(half)
        for name, process in services.processes.items():
            print(
                f"  {name}: peak memory (VmHWM) {peak_memory(process.pid)},"
                f" CPU since start {cpu_since_start(process.pid)}"
            )
        services.stop()  # the baseline runs alone, as in bench/orders.py
        baseline = await bench_baseline(world, admin, args.orders)
        if baseline and full.committed and full.done:
            print(
                f"  ratios to the baseline: orders stage {args.orders / full.committed / baseline:.2f}, "
                f"end to end {args.orders / full.done / baseline:.2f}"
            )
        print(f"  load average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        await tear_down(world, admin, services, sink)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small smoke run (1,000 orders)")
    parser.add_argument("--orders", type=int, default=20_000, help="orders at full speed (half as many at half)")
    parser.add_argument("--mail-timeout", type=float, default=600, help="seconds to wait per phase at most")
    parser.add_argument(
        "--rate", type=float, default=None, help="orders per second of the paced phase (default: half of full speed)"
    )
    args = parser.parse_args()
    if args.quick:
        args.orders = 1_000
        args.mail_timeout = min(args.mail_timeout, 120)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
