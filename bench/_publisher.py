"""Publishing CloudEvents as another system would (CONTRACT section 3 properties, persistent, publisher
confirms), fast enough that a benchmark measures the service rather than its publisher: windows of messages
are each written in one socket write and several windows await their confirms at once
(`spm_common.outbox.AmqpPublisher.publish_many`, the relay's own publish). aio-pika's publish-and-await per
message topped out at ~2,700 events/s on the development machine.

    python -m bench._publisher AMQP_URL EXCHANGE FILE     # FILE: one CloudEvent (JSON) per line

run as a child process, so a benchmark process measuring its own CPU does not pay for it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence

import aio_pika
from spm_common.envelope import CloudEvent
from spm_common.outbox import AmqpPublisher

WINDOW = 500  # messages written at once
IN_FLIGHT = 4  # windows awaiting their confirms at once


async def publish_bodies(
    url: str, exchange: str, bodies: Sequence[tuple[str, str, bytes]], *, ready: bool = False
) -> None:
    """Publish (event_type, event_id, body) triples in order, with confirms; raises if any was not confirmed.
    With `ready`, prints "ready" once connected (a parent process starts its clock there)."""
    connection = await aio_pika.connect_robust(url)
    async with connection:
        publisher = AmqpPublisher(lambda: _same(connection), exchange, timeout=120)
        if ready:
            print("ready", flush=True)
        slots = asyncio.Semaphore(IN_FLIGHT)

        async def window(chunk: Sequence[tuple[str, str, bytes]]) -> None:
            try:
                # Routing key = type, as every outside publisher sends.
                for result in await publisher.publish_many([(t, i, b, t) for t, i, b in chunk]):
                    if isinstance(result, BaseException):
                        raise result
            finally:
                slots.release()

        windows = []
        for start in range(0, len(bodies), WINDOW):
            await slots.acquire()  # windows leave in order: each is written before the next is started
            windows.append(asyncio.create_task(window(bodies[start : start + WINDOW])))
        await asyncio.gather(*windows)
        await publisher.close()


async def publish_events(url: str, exchange: str, events: Iterable[CloudEvent]) -> None:
    await publish_bodies(url, exchange, [(e.type, e.id, e.to_json()) for e in events])


async def _same(connection: aio_pika.abc.AbstractRobustConnection) -> aio_pika.abc.AbstractRobustConnection:
    return connection


async def publish_in_child(url: str, exchange: str, events: Iterable[CloudEvent]) -> asyncio.subprocess.Process:
    """Start publishing `events` from a child process; returns when it is connected and about to publish (the
    moment to start a clock); await the process's `wait()` for the end."""
    with tempfile.NamedTemporaryFile("wb", prefix="spm-bench-events-", delete=False) as handle:
        handle.write(b"\n".join(e.to_json() for e in events))
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench._publisher", url, exchange, handle.name, stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    if await child.stdout.readline() != b"ready\n":
        raise RuntimeError("the publisher did not start")
    return child


if __name__ == "__main__":
    url, exchange, path = sys.argv[1:4]
    with open(path, "rb") as source:
        lines = source.read().splitlines()
    os.unlink(path)
    events = [CloudEvent.parse(line) for line in lines]
    asyncio.run(publish_bodies(url, exchange, [(e.type, e.id, e.to_json()) for e in events], ready=True))
