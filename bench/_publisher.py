"""A child process that publishes COUNT CloudEvents of type ROUTING_KEY to EXCHANGE as another system would
(CONTRACT section 3 properties, persistent, confirms in windows of 200), so the benchmark process measuring its
own CPU does not pay for publishing.

    python -m bench._publisher AMQP_URL EXCHANGE ROUTING_KEY COUNT
"""

from __future__ import annotations

import asyncio
import sys

import aio_pika
from spm_common.envelope import amqp_message, new_event


async def publish(url: str, exchange_name: str, routing_key: str, count: int) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(exchange_name, ensure=False)
        for start in range(0, count, 200):
            messages = [
                amqp_message(new_event(routing_key, "urn:spm:bench", {"n": n, "note": "benchmark event"}))
                for n in range(start, min(count, start + 200))
            ]
            await asyncio.gather(*(exchange.publish(m, routing_key=routing_key) for m in messages))


if __name__ == "__main__":
    url, exchange, key, count = sys.argv[1:5]
    asyncio.run(publish(url, exchange, key, int(count)))
