"""A service's dead letters (its `.dlq` queue): list them without removing them, and replay them to its queue.

Shared by `spm-admin dlq list|replay` and each consuming service's operator endpoints (`/v1/dead-letters`),
so the console shows and replays dead letters through the service itself, with the service's own broker
user, and never needs rights on the broker of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage
from pydantic import BaseModel

from spm_common.topology import Topology


class DeadLetter(BaseModel):
    """What an operator sees of a dead-lettered message: never its body (it may hold personal data)."""

    message_id: str | None
    type: str | None
    attempts: int | None
    reason: str | None
    failed_at: str | None


# Where the messages are read: an AMQP URL (a connection of its own, opened and closed: spm-admin), or the
# service's live connection (a channel of its own on it, closed after: the service's /v1/dead-letters). A new
# connection for every listing had cost each service ~5-15 ms of CPU and the broker more (the console's
# dead-letter page opened four at once: 340 ms p50 among a loaded machine's other work, bench.console).
Broker = str | Callable[[], Awaitable[AbstractConnection]]


async def list_dead_letters(amqp_url: Broker, topology: Topology, limit: int) -> list[DeadLetter]:
    """Up to `limit` dead letters, oldest first, left in the queue.

    Each message shown goes back to the end of the queue as a copy, and the original is acknowledged.
    Returning it with a nack would count as a delivery: RabbitMQ 4 gives every quorum queue a delivery
    limit, and this queue has nowhere to dead-letter to, so listing it often enough would drop the
    messages. Listing at least the queue's length leaves the order as it was."""
    found: list[DeadLetter] = []

    async def show(message: AbstractIncomingMessage, channel: aio_pika.abc.AbstractChannel) -> None:
        found.append(_described(message))
        await _back_to_the_end(message, channel, topology)

    await _each_waiting(amqp_url, topology, limit, show)
    return found


async def replay_dead_letters(amqp_url: Broker, topology: Topology, limit: int, message_id: str | None = None) -> int:
    """Move dead letters (all, up to `limit`, or only the one with `message_id`) back to the service's queue
    for another round of attempts; returns how many moved. Others looked at on the way go back to the end of
    the dead-letter queue, as `list_dead_letters` leaves them."""
    moved = 0

    async def replay(message: AbstractIncomingMessage, channel: aio_pika.abc.AbstractChannel) -> None:
        nonlocal moved
        if message_id is not None and message.message_id != message_id:
            await _back_to_the_end(message, channel, topology)
            return
        headers = {k: v for k, v in (message.headers or {}).items() if not k.startswith("x-")}
        await channel.default_exchange.publish(copy_message(message, headers), routing_key=topology.queue_name)
        await message.ack()
        moved += 1

    await _each_waiting(amqp_url, topology, limit, replay)
    return moved


async def _each_waiting(amqp_url: Broker, topology: Topology, limit: int, handle: Any) -> None:
    if isinstance(amqp_url, str):
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            await _each_on(connection, topology, limit, handle)
    else:
        await _each_on(await amqp_url(), topology, limit, handle)


async def _each_on(connection: AbstractConnection, topology: Topology, limit: int, handle: Any) -> None:
    channel = await connection.channel(publisher_confirms=True)
    async with channel:
        queue = await channel.get_queue(topology.dead_letter_queue_name, ensure=True)
        # Only what is waiting now: a message put back (or failing again at once) is not seen twice.
        waiting = queue.declaration_result.message_count or 0
        for _ in range(min(limit, waiting)):
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            await handle(message, channel)


async def _back_to_the_end(
    message: AbstractIncomingMessage, channel: aio_pika.abc.AbstractChannel, topology: Topology
) -> None:
    headers = {k: v for k, v in (message.headers or {}).items() if k != "x-delivery-count"}
    await channel.default_exchange.publish(copy_message(message, headers), routing_key=topology.dead_letter_queue_name)
    await message.ack()


def _described(message: AbstractIncomingMessage) -> DeadLetter:
    headers = message.headers or {}
    attempts = headers.get("x-spm-attempt")
    failed_at = headers.get("x-spm-failed-at")
    error = headers.get("x-spm-error")
    return DeadLetter(
        message_id=message.message_id,
        type=message.type,
        attempts=attempts if isinstance(attempts, int) else None,
        reason=str(error) if error else _death_reason(headers),
        failed_at=str(failed_at) if failed_at is not None else None,
    )


def copy_message(message: AbstractIncomingMessage, headers: dict[str, Any]) -> aio_pika.Message:
    """A persistent copy of a message taken off a queue, with these headers: what goes back to a queue in its
    stead (the listing and the replay here, and the parking of old dead letters in spm_common.retention)."""
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def _death_reason(headers: Mapping[str, object]) -> str | None:
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        return f"broker: {deaths[0].get('reason')}"
    return None
