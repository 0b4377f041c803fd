"""Helpers of the contact service's tests (on sys.path through `pythonpath` in the root pyproject.toml)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import aio_pika
import httpx
import orjson
from contact.app import create
from contact.handlers import handlers
from contact.settings import Settings
from fastapi import FastAPI
from spm_common.envelope import CloudEvent, amqp_message
from spm_common.publishers import amqp_login
from spm_common.testing.world import AMQP_URL, OPERATOR_TOKEN, World

T = TypeVar("T")
# The global limit is shared by every app of the session; tests that are not about it keep it out of the way.
RELAXED = {"contact_rate_global": 1_000_000, "contact_rate_per_client": 5}


def random_ip() -> str:
    return f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


def new_address(tag: str = "visitor") -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}@example.com"


@dataclass
class Contact:
    app: FastAPI
    settings: Settings

    def client(self, ip: str | None = None, *, operator: bool = False) -> httpx.AsyncClient:
        """A client connecting from `ip` (random by default); with `operator`, carrying the operator token."""
        transport = httpx.ASGITransport(app=self.app, client=(ip or random_ip(), 50000))
        headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}"} if operator else {}
        return httpx.AsyncClient(transport=transport, base_url="http://contact.test", headers=headers)

    @property
    def operator(self) -> httpx.AsyncClient:
        return self.client(operator=True)


@asynccontextmanager
async def started(world: World, **overrides: Any) -> AsyncIterator[Contact]:
    settings = world.settings(Settings, **{**RELAXED, **overrides})
    app = create(settings)
    async with app.router.lifespan_context(app):
        yield Contact(app, settings)


def form(**fields: Any) -> dict[str, Any]:
    body = {"name": "Nguyễn Thị Thử", "email": new_address(), "subject": "Hỏi về giấy phép", "message": "Xin chào"}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout: float = 10, what: str = "condition") -> T:
    """Poll `probe` until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await probe()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{what} not met within {timeout}s")
        await asyncio.sleep(0.05)


async def outbox_events(world: World, event_type: str) -> list[CloudEvent]:
    conn = await world.admin()
    try:
        rows = await conn.fetch("SELECT body FROM contact.outbox WHERE event_type = $1 ORDER BY id", event_type)
    finally:
        await conn.close()
    return [CloudEvent.parse(bytes(row["body"])) for row in rows]


# The routing keys the service's queue binds where they are not the event type (the notifier's outcomes).
ROUTING_KEYS = handlers(Settings()).routing_keys


async def publish(world: World, event: CloudEvent, routing_key: str | None = None) -> None:
    """Publish an event on the session's exchange as another service's outbox relay would (the notifier's
    outcomes of this service's mail under the keys this service binds, from contact.handlers)."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(world.exchange)
        message = amqp_message(event)
        message.user_id = amqp_login(AMQP_URL)  # as a relay sets it: the notifier believes no mail request without
        await exchange.publish(message, routing_key=routing_key or ROUTING_KEYS.get(event.type, event.type))


@asynccontextmanager
async def watching(world: World, pattern: str) -> AsyncIterator[list[CloudEvent]]:
    """Events matching `pattern` on the session's exchange while the block runs, in arrival order."""
    seen: list[CloudEvent] = []
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(world.exchange)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key=pattern)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                seen.append(CloudEvent.model_validate(orjson.loads(message.body)))

        await queue.consume(on_message)
        yield seen
