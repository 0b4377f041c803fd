"""A message a service keeps failing to settle is dead-lettered after DELIVERY_LIMIT deliveries.

RabbitMQ 4 gives every quorum queue a delivery limit of 20 when none is declared; the test machine's 3.10
gives none. The topology declares the limit itself, so a crash loop ends the same way on both (README,
"Versions").
"""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
from faststream.rabbit import RabbitBroker
from spm_common.testing.world import AMQP_URL, World
from spm_common.topology import DELIVERY_LIMIT, Topology


async def test_a_message_returned_delivery_limit_times_is_dead_lettered(lab: World) -> None:
    exchange = f"{lab.name}.{uuid.uuid4().hex[:8]}"
    lab.exchanges.add(exchange)
    topology = Topology(exchange, "orders")
    broker = RabbitBroker(AMQP_URL, logger=None)
    async with broker:
        await topology.declare(broker, ["probe.happened"])

    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange)
        await target.publish(aio_pika.Message(b"{}", message_id="poison"), routing_key="probe.happened")
        queue = await channel.get_queue(topology.queue_name)
        deliveries = 0
        # As a consumer that dies holding the message would: it goes back each time, until the broker stops it.
        while (message := await queue.get(no_ack=False, fail=False)) is not None:
            deliveries += 1
            await message.nack(requeue=True)
            assert deliveries <= DELIVERY_LIMIT + 1, "the broker never stopped delivering it"
        # The first delivery and DELIVERY_LIMIT returns (RabbitMQ 3.10 and 4.1 count every return).
        assert deliveries == DELIVERY_LIMIT + 1

        dlq = await channel.get_queue(topology.dead_letter_queue_name)
        # The quorum queue dead-letters asynchronously: the copy reaches the DLQ a moment after the last return.
        dead = None
        for _ in range(100):
            if (dead := await dlq.get(no_ack=True, fail=False)) is not None:
                break
            await asyncio.sleep(0.05)
        assert dead is not None, "the message never reached the dead-letter queue"
        assert dead.message_id == "poison"
        deaths = (dead.headers or {}).get("x-death")
        assert isinstance(deaths, list) and isinstance(deaths[0], dict)
        assert deaths[0]["reason"] == "delivery_limit"
