"""The shared event backbone alone: CPU per event of the outbox relay and of the idempotent consumer.

    uv run python -m bench.backbone [--quick] [--events N]

A service runtime (spm_common.runtime.Runtime, no domain code) runs in this process in a throwaway world:
- relay: N rows are put in its outbox (COPY, before measuring), then one NOTIFY; timed until the relay has
  published every one (confirmed by the broker, routed to a quorum queue) and marked it sent;
- consumer: a child process publishes N CloudEvents to the service's queue; timed until every one is in the
  inbox (the handler does nothing, so what is measured is the consumer: decode, inbox, acknowledgement).

The figure that matters on a shared machine is the CPU time of this process per event (utime + stime),
printed beside the wall-clock rate and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import pstats
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import aio_pika
import asyncpg
import uvloop
from pydantic import Field
from spm_common.db import Connection
from spm_common.envelope import Payload, new_event
from spm_common.handlers import Handlers, Meta
from spm_common.logging import configure_logging
from spm_common.runtime import Runtime
from spm_common.settings import ServiceSettings
from spm_common.testing.world import AMQP_URL, World, new_world

from bench._publisher import publish_in_child

RELAYED = "bench.relayed"
CONSUMED = "bench.consumed"


class BenchSettings(ServiceSettings):
    service: str = "contact"  # one of the roles bootstrap creates; the world is throwaway
    contact_port: int = Field(default=8081)


def cpu() -> tuple[float, float]:
    """(user, system) CPU seconds of this process so far."""
    times = os.times()
    return times.user, times.system


async def wait_for(admin: asyncpg.Connection, query: str, target: int, timeout: float = 300) -> None:
    deadline = time.perf_counter() + timeout
    while await admin.fetchval(query) < target:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{query!r} did not reach {target}")
        await asyncio.sleep(0.05)


@contextlib.contextmanager
def profiled(enabled: bool) -> Iterator[None]:
    """With --profile: where this process's time went in the block, by own time."""
    if not enabled:
        yield
        return
    profile = cProfile.Profile()
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)


def line(what: str, count: int, wall: float, before: tuple[float, float]) -> None:
    user, system = (now - then for now, then in zip(cpu(), before, strict=True))
    print(
        f"  {what:<44} {count / wall:8,.0f} events/s   CPU {(user + system) / count * 1e6:4.0f} µs/event"
        f" (user {user / count * 1e6:.0f}, system {system / count * 1e6:.0f})"
    )


async def bench_relay(world: World, admin: asyncpg.Connection, runtime: Runtime, count: int) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(
            f"{world.exchange}.bench-relayed", durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.bind(world.exchange, routing_key=RELAYED)
        events = [new_event(RELAYED, "urn:spm:bench", {"n": n, "note": "benchmark event"}) for n in range(count)]
        await admin.copy_records_to_table(
            "outbox",
            schema_name="contact",
            columns=["event_id", "event_type", "body"],
            records=[(e.id, e.type, e.to_json()) for e in events],
        )
        started, used = time.perf_counter(), cpu()
        await admin.execute("SELECT pg_notify('spm_outbox_contact', '')")
        await wait_for(admin, "SELECT (count(*) = 0)::int FROM contact.outbox WHERE published_at IS NULL", 1)
        line(f"relay: outbox -> published ({count:,})", count, time.perf_counter() - started, used)
        if await admin.fetchval("SELECT max(attempts) FROM contact.outbox") != 1:
            print("    (some rows took more than one attempt: the broker refused or timed out)")
        await queue.delete(if_unused=False, if_empty=False)


async def bench_consumer(world: World, admin: asyncpg.Connection, count: int) -> None:
    before = await admin.fetchval("SELECT count(*) FROM contact.inbox")
    events = [new_event(CONSUMED, "urn:spm:bench", {"n": n, "note": "benchmark event"}) for n in range(count)]
    child = await publish_in_child(AMQP_URL, world.exchange, events)
    started, used = time.perf_counter(), cpu()
    await wait_for(admin, "SELECT count(*) FROM contact.inbox", before + count)
    line(f"consumer: queue -> inbox, acked ({count:,})", count, time.perf_counter() - started, used)
    await child.wait()


class Consumed(Payload):
    """The benchmark's event: a number and a note, validated like any service's payload."""

    event_type: ClassVar[str] = CONSUMED

    n: int
    note: str


async def nothing(conn: Connection, payload: Consumed, event: Meta) -> None:
    return None


async def run(migrations: Path) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--events", type=int, default=20_000, help="events per figure")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of each part")
    args = parser.parse_args()
    count = 2000 if args.quick else args.events
    configure_logging("bench", "console", "warning")
    world = new_world()
    await world.create()
    runtime: Runtime | None = None
    try:
        settings = world.settings(BenchSettings, log_level="warning", outbox_poll_seconds=5)
        print(
            f"backbone benchmark: {count:,} events per figure; prefetch {settings.prefetch}, consumer batch"
            f" {settings.consumer_batch}, outbox batch {settings.outbox_batch}"
        )
        print(f"  load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
        runtime = Runtime(settings, migrations=migrations, handlers=Handlers().on(Consumed, nothing))
        await runtime.start()
        admin = await world.admin()
        try:
            with profiled(args.profile):
                await bench_relay(world, admin, runtime, count)
            with profiled(args.profile):
                await bench_consumer(world, admin, count)
        finally:
            await admin.close()
        print(f"  load average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if runtime is not None:
            await runtime.stop()
        await world.destroy()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="spm-bench-backbone-") as empty:  # the runtime's own migrations
        uvloop.run(run(Path(empty)))  # the loop the services run on (uvicorn picks uvloop)
