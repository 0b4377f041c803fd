"""Events published as an outside system publishes them (the shop, the release pipeline): plain aio-pika with
CONTRACT section 3's properties, not this system's own outbox publisher."""

from __future__ import annotations

import uuid
from typing import Any

import aio_pika
import orjson

from spm_common.envelope import CONTENT_TYPE
from spm_common.testing.world import AMQP_URL

SHOP = "https://shop.example/orders"


async def publish(
    exchange: str,
    event_type: str,
    data: Any,
    *,
    source: str = SHOP,
    event_id: str | None = None,
    envelope: dict[str, Any] | None = None,
    headers: dict[str, Any] | None = None,
    body: bytes | None = None,
    message_id: str | None = None,
    amqp_url: str = AMQP_URL,
    user_id: str | None = None,
) -> str:
    """Publish one CloudEvent on `exchange` with routing key = its type; returns its id. `user_id`: the login
    of `amqp_url`, as this system's outbox relay sets it (the notifier believes a mail request only with it)."""
    event_id = event_id or str(uuid.uuid4())
    document = {
        "specversion": "1.0",
        "id": event_id,
        "type": event_type,
        "source": source,
        "time": "2026-11-29T04:00:00Z",
        "datacontenttype": "application/json",
        "data": data,
        **(envelope or {}),
    }
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange, ensure=False)
        await target.publish(
            aio_pika.Message(
                body if body is not None else orjson.dumps(document),
                content_type=CONTENT_TYPE,
                message_id=message_id or event_id,
                type=event_type,
                headers=headers or {},
                user_id=user_id,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=event_type,
        )
    return event_id
