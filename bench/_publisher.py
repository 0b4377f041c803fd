"""A child process that publishes CloudEvents as another system would (CONTRACT section 3 properties,
persistent, confirms in windows of 200), so a benchmark process measuring its own CPU does not pay for it.

    python -m bench._publisher AMQP_URL EXCHANGE FILE     # FILE: one CloudEvent (JSON) per line
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from collections.abc import Iterable

import aio_pika
from spm_common.envelope import CloudEvent, amqp_message


async def publish(url: str, exchange_name: str, bodies: list[bytes]) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(exchange_name, ensure=False)
        events = [CloudEvent.parse(body) for body in bodies]
        print("ready", flush=True)  # the parent starts its clock here, not at the interpreter's start
        for start in range(0, len(bodies), 200):
            chunk = events[start : start + 200]
            await asyncio.gather(*(exchange.publish(amqp_message(e), routing_key=e.type) for e in chunk))


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
    asyncio.run(publish(url, exchange, lines))
