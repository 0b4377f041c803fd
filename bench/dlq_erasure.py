"""Dead letters and erasure: how long `spm_common.deadletters.remove_dead_letters` takes to go through a
dead-letter queue of N messages and remove the 1 % that name one address (what each service does in its
erasure, while the erasure's transaction waits).

    uv run python -m bench.dlq_erasure [--quick] [--sizes 100,1000,5000]

A quorum queue of its own on the local RabbitMQ (deleted at the end), filled with `order.placed`-like
bodies of about 300 bytes; no database.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import aio_pika
import orjson
from spm_common.deadletters import about_address, remove_dead_letters
from spm_common.testing.world import AMQP_URL
from spm_common.topology import Topology

SUBJECT = "ada.bench@example.test"


def body(i: int) -> bytes:
    email = SUBJECT if i % 100 == 0 else f"person{i}@example.test"
    return orjson.dumps(
        {
            "type": "order.placed",
            "data": {"order_id": f"FS-{i}", "purchaser": {"name": f"Person {i}", "email": email}, "items": []},
        }
    )


async def run(size: int) -> None:
    topology = Topology(f"bench.dlq-erasure.{uuid.uuid4().hex[:8]}", "bench")
    name = topology.dead_letter_queue_name
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
        # The survivors go back through the service's own exchange, as Topology.declare binds it.
        requeue = await channel.declare_exchange(topology.requeue_exchange_name, aio_pika.ExchangeType.DIRECT)
        await queue.bind(requeue, routing_key=name)
        try:
            await asyncio.gather(
                *(
                    channel.default_exchange.publish(
                        aio_pika.Message(body(i), message_id=str(i), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                        routing_key=name,
                    )
                    for i in range(size)
                )
            )
            started = time.perf_counter()
            removal = await remove_dead_letters(AMQP_URL, topology, about_address(SUBJECT))
            elapsed = time.perf_counter() - started
            print(
                f"{size:>6} dead letters: removed {removal.removed}, kept {removal.kept} in {elapsed:.2f} s"
                f" ({size / elapsed:,.0f} messages/s)",
                flush=True,
            )
        finally:
            await queue.delete(if_unused=False, if_empty=False)
            await requeue.delete()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", default="100,1000,5000")
    args = parser.parse_args()
    sizes = [100] if args.quick else [int(s) for s in args.sizes.split(",")]
    for size in sizes:
        asyncio.run(run(size))


if __name__ == "__main__":
    main()
