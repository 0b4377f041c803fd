"""Reading what waits in a world's queues without taking it away, for scans of what the broker holds."""

from __future__ import annotations

from collections.abc import Iterable

import aio_pika

from spm_common.deadletters import copy_message
from spm_common.publishers import amqp_login
from spm_common.testing.world import AMQP_URL
from spm_common.topology import Topology


def message_text(message: aio_pika.abc.AbstractIncomingMessage) -> str:
    """Everything a message carries that a person could read: body, headers and the text properties."""
    return " ".join(
        [
            message.body.decode("utf-8", "replace"),
            repr(message.headers),
            str(message.message_id),
            str(message.correlation_id),
            str(message.type),
        ]
    )


async def peek_queues(exchange: str, services: Iterable[str], amqp_url: str = AMQP_URL) -> dict[str, list[str]]:
    """The text of every message now in each service's main, retry and dead-letter queue, by queue name.

    Each message read goes back to the end of its queue as a copy, its expiry kept (a retry must still
    come back when due), and the original is acknowledged, as `spm-admin dlq list` leaves dead letters:
    a nack would count as a delivery, and a quorum queue drops what passes its delivery limit."""
    found: dict[str, list[str]] = {}
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        for service in services:
            topology = Topology(exchange, service)
            for name in (topology.queue_name, topology.retry_queue_name, topology.dead_letter_queue_name):
                queue = await channel.declare_queue(name, passive=True)
                # Only what is waiting now, so that no copy put back is read twice.
                waiting = queue.declaration_result.message_count or 0
                found[name] = []
                for _ in range(waiting):
                    message = await queue.get(no_ack=False, fail=False)
                    if message is None:  # taken by the service's own consumer meanwhile
                        break
                    found[name].append(message_text(message))
                    headers = {k: v for k, v in (message.headers or {}).items() if k != "x-delivery-count"}
                    copy = copy_message(message, headers, amqp_login(amqp_url))
                    copy.expiration = message.expiration
                    await channel.default_exchange.publish(copy, routing_key=name)
                    await message.ack()
    return found
