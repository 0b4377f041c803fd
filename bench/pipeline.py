"""Pipeline benchmark: `order.placed` published as the shop would, until the confirmation e-mail is accepted by
Postfix's smtp-sink and the order's events are in the audit trail, with all four services running.

    uv run python -m bench.pipeline [--quick] [--orders N] [--mail-timeout T]

Contact, orders, notifier and audit run as real processes in a throwaway world (own database and exchange,
removed afterwards), with smtp-sink on a free port dumping each accepted message to a file. Two phases:
full speed (N orders published as fast as publisher confirms allow) and half of the rate full speed reached
(a paced publisher, N/2 orders). Latency of an order = the accepted message file's mtime (smtp-sink's
acceptance) minus the wall-clock time its publish started. Then, in the same run with the services stopped,
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

import aio_pika
import asyncpg
from spm_common.testing.world import AMQP_URL, World, new_world

from bench.orders import Services, Sink, bench_baseline, cloudevent, order, tear_down

WINDOW = 200
AUDIT_COUNT = "SELECT count(*) FROM audit.entries WHERE event_type = $1"


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

    @property
    def done(self) -> float | None:
        if self.mailed is None or self.audited is None:
            return None
        return max(self.mailed, self.audited)


async def publish(
    exchange: aio_pika.abc.AbstractExchange, messages: list[aio_pika.Message], rate: float | None
) -> list[float]:
    """Publish in windows of confirms, each message at its turn for `rate` per second or as fast as possible.
    Returns each message's wall-clock publish time."""
    sent_at: list[float] = []
    started = time.perf_counter()
    sent = 0
    while sent < len(messages):
        due = len(messages) if rate is None else min(len(messages), int((time.perf_counter() - started) * rate) + 1)
        if due <= sent:
            await asyncio.sleep(max(0.001, started + sent / rate - time.perf_counter()))  # type: ignore[operator]
            continue
        chunk = messages[sent : min(due, sent + WINDOW)]
        sent_at.extend([time.time()] * len(chunk))
        await asyncio.gather(*(exchange.publish(m, routing_key="order.placed") for m in chunk))
        sent += len(chunk)
    return sent_at


async def run_phase(
    world: World, admin: asyncpg.Connection, sink: Sink, name: str, count: int, rate: float | None, timeout: float
) -> Phase:
    phase = Phase(name, count)
    tag = uuid.uuid4().hex[:6]
    messages = [cloudevent("order.placed", order(i, tag)) for i in range(count)]
    placed0 = await admin.fetchval(AUDIT_COUNT, "order.placed")
    recorded0 = await admin.fetchval(AUDIT_COUNT, "order.recorded")
    sink.clear()
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(world.exchange, ensure=False)
        started = time.perf_counter()
        publisher = asyncio.create_task(publish(exchange, messages, rate))
        last_progress, last_seen = started, (-1, -1, -1)
        while True:
            await asyncio.sleep(0.1)
            now = time.perf_counter() - started
            committed = await admin.fetchval(
                "SELECT count(*) FROM orders.orders WHERE order_id LIKE $1", f"BENCH-{tag}-%"
            )
            placed = await admin.fetchval(AUDIT_COUNT, "order.placed") - placed0
            recorded = await admin.fetchval(AUDIT_COUNT, "order.recorded") - recorded0
            mailed = sink.count()
            if phase.committed is None and committed >= count:
                phase.committed = now
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
                    f"{min(placed, recorded)}/{count} in the trail, {mailed}/{count} e-mails"
                )
                break
        sent_at = await publisher
        phase.published = max(sent_at) - min(sent_at) if sent_at else 0.0
    accepted = sink.accepted()
    for i, t in enumerate(sent_at):
        at = accepted.get(f"bench-{tag}-{i}@example.com")
        if at is None:
            phase.missing_mail += 1
        else:
            phase.latencies.append(at - t)
    return phase


def per_second(count: int, seconds: float | None) -> str:
    return f"{count / seconds:,.0f}/s ({seconds:.1f} s)" if seconds else "not reached"


def latency(values: list[float]) -> str:
    if len(values) < 2:
        return "n/a"
    q = statistics.quantiles(values, n=1000, method="inclusive")
    return f"p50 {q[499] * 1000:,.0f} ms, p99 {q[989] * 1000:,.0f} ms, p99.9 {q[998] * 1000:,.0f} ms"


def report(phase: Phase) -> None:
    print(f"  {phase.name}: {phase.count:,} order.placed")
    print(f"    published (confirms):                 {per_second(phase.count, phase.published)}")
    print(f"    orders committed:                     {per_second(phase.count, phase.committed)}")
    print(f"    e-mails accepted by smtp-sink:        {per_second(phase.count, phase.mailed)}")
    print(f"    order.placed + order.recorded audited: {per_second(phase.count, phase.audited)}")
    print(f"    end to end (e-mail and trail):        {per_second(phase.count, phase.done)}")
    missing = f" ({phase.missing_mail} e-mails not found)" if phase.missing_mail else ""
    print(f"    latency publish -> e-mail accepted:   {latency(phase.latencies)}{missing}")


def peak_memory(pid: int) -> str:
    """VmHWM (peak resident set) of a live process, from /proc."""
    with suppress(OSError), open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return f"{int(line.split()[1]) / 1024:,.0f} MB"
    return "n/a"


def cpu_seconds(pid: int) -> str:
    """User + system CPU time of a live process since it started, from /proc."""
    with suppress(OSError), open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
        return f"{(int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK'):,.1f} s"
    return "n/a"


async def run(args: argparse.Namespace) -> None:
    world = new_world()
    sink = Sink()
    sink.start()
    world.smtp_port = sink.port
    await world.create()
    services = Services(world, sink.port, audit=True)
    services.names = ["contact", *services.names]
    admin = await asyncpg.connect(world.database_url)
    try:
        await services.start()
        print(f"pipeline benchmark: {', '.join(services.names)} as processes; smtp-sink on port {sink.port}")
        print(f"  load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
        full = await run_phase(world, admin, sink, "full speed", args.orders, None, args.mail_timeout)
        report(full)
        half_rate = args.orders / full.done / 2 if full.done else 250
        half_count = max(200, args.orders // 2)
        half = await run_phase(
            world, admin, sink, f"half speed ({half_rate:,.0f}/s)", half_count, half_rate, args.mail_timeout
        )
        report(half)
        for name, process in services.processes.items():
            print(
                f"  {name}: peak memory (VmHWM) {peak_memory(process.pid)}, CPU since start {cpu_seconds(process.pid)}"
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
    args = parser.parse_args()
    if args.quick:
        args.orders = 1_000
        args.mail_timeout = min(args.mail_timeout, 120)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
