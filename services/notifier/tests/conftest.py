"""Fixtures of the notifier's tests: settings for the test world, a publisher of requests, a database probe.

Unit tests (mail, rules) use none of them; the flow tests run the real notifier against the real Postgres,
RabbitMQ and the in-process SMTP server of `spm_common.testing`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import aio_pika
import asyncpg
import pytest
from notifier.settings import Settings
from notifier_helpers import FAST
from spm_common.envelope import CloudEvent, amqp_message
from spm_common.publishers import amqp_login
from spm_common.testing.world import AMQP_URL, World


@pytest.fixture
def settings(world: World) -> Settings:
    return world.settings(Settings, **FAST)


Publish = Callable[..., Awaitable[None]]


@pytest.fixture
async def publish(world: World) -> AsyncIterator[Publish]:
    """Publish CloudEvents to the world's exchange as another service's outbox relay would: with the login the
    tests share (the notifier's too, so the login tells no one apart: notifier.policy.Publishers) as user_id."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(world.exchange, aio_pika.ExchangeType.TOPIC, durable=True)

        async def send(*events: CloudEvent) -> None:
            for event in events:
                message = amqp_message(event)
                message.user_id = amqp_login(AMQP_URL)
                await exchange.publish(message, routing_key=event.type)

        yield send


@pytest.fixture
async def db(world: World) -> AsyncIterator[asyncpg.Connection]:
    conn = await world.admin()
    yield conn
    await conn.close()
