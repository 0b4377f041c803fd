"""Fixtures of the shared library's tests: a world of their own, a probe service, and an AMQP tap.

The probe is a test-only service built with `spm_common.runtime.Runtime`. It takes the name `orders` (one
of the four names bootstrap creates a role for) but lives in a database of its own (`lab`), so it never
meets the real orders service's tables. Each test gives it an exchange of its own, so queues never carry
one test's messages into another.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from pydantic import Field
from spm_common.handlers import Handlers
from spm_common.runtime import Runtime
from spm_common.settings import ServiceSettings
from spm_common.testing.world import AMQP_URL, World, new_world
from spm_common.topology import Topology

PROBE_MIGRATIONS = Path(__file__).parent / "probe_migrations"


class ProbeSettings(ServiceSettings):
    service: str = "orders"
    orders_port: int = Field(default=8082, ge=1, le=65535)


@pytest.fixture(scope="session")
async def lab() -> AsyncIterator[World]:
    """A world only the shared library's tests use (the session's `world` belongs to the real services)."""
    instance = new_world()
    await instance.create()
    yield instance
    await instance.destroy()


@pytest.fixture
def probe_settings(lab: World) -> Callable[..., ProbeSettings]:
    """Settings of a probe on an exchange of its own; keyword arguments override any setting."""

    def make(**overrides: Any) -> ProbeSettings:
        values: dict[str, Any] = {
            "exchange": f"{lab.name}.{uuid.uuid4().hex[:8]}",
            "retry_delay_ms": 200,
            "max_attempts": 3,
            "outbox_poll_seconds": 0.5,
        }
        values.update(overrides)
        return lab.settings(ProbeSettings, **values)

    return make


@asynccontextmanager
async def started(runtime: Runtime) -> AsyncIterator[Runtime]:
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


@pytest.fixture
def probe(probe_settings: Callable[..., ProbeSettings]) -> Callable[..., Any]:
    """`async with probe(handlers=Handlers().on(...), **settings) as runtime:` a started probe service."""

    def make(handlers: Handlers | None = None, **overrides: Any) -> Any:
        return started(Runtime(probe_settings(**overrides), migrations=PROBE_MIGRATIONS, handlers=handlers))

    return make


@pytest.fixture(scope="session")
async def amqp() -> AsyncIterator[aio_pika.abc.AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(AMQP_URL)
    yield connection
    await connection.close()


@dataclass
class Tap:
    """Every message routed to a temporary queue bound to the exchange, as the broker delivered it."""

    messages: list[aio_pika.abc.AbstractIncomingMessage] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def _on(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.messages.append(message)
        self.arrived.append(asyncio.get_running_loop().time())
        self._changed.set()

    @property
    def ids(self) -> list[str | None]:
        return [m.message_id for m in self.messages]

    async def wait(self, count: int, timeout: float = 10) -> list[aio_pika.abc.AbstractIncomingMessage]:
        async with asyncio.timeout(timeout):
            while len(self.messages) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.messages


@pytest.fixture
def tap(amqp: aio_pika.abc.AbstractRobustConnection) -> Callable[..., Any]:
    """`async with tap(exchange, "probe.#") as seen:` collects what the exchange routes to that key."""

    @asynccontextmanager
    async def make(exchange: str, routing_key: str = "#") -> AsyncIterator[Tap]:
        channel = await amqp.channel()
        try:
            topic = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            await queue.bind(topic, routing_key=routing_key)
            seen = Tap()

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                seen._on(message)

            # Without acknowledgements: an ack still on its way when the channel closes is a connection
            # error at the broker, which would close the session's connection under the next test.
            await queue.consume(on_message, no_ack=True)
            yield seen
        finally:
            await channel.close()

    return make


@pytest.fixture
def publish(amqp: aio_pika.abc.AbstractRobustConnection) -> Callable[..., Awaitable[None]]:
    """Publish raw bytes to an exchange as an outside system would, with any AMQP properties."""

    async def send(exchange: str, routing_key: str, body: bytes, **properties: Any) -> None:
        channel = await amqp.channel(publisher_confirms=True)
        try:
            target = await channel.get_exchange(exchange)
            properties.setdefault("delivery_mode", aio_pika.DeliveryMode.PERSISTENT)
            await target.publish(aio_pika.Message(body, **properties), routing_key=routing_key)
        finally:
            await channel.close()

    return send


@pytest.fixture
def queues(amqp: aio_pika.abc.AbstractRobustConnection) -> Callable[[Topology], Awaitable[dict[str, int]]]:
    """Messages waiting in a service's queue, retry queue and dead-letter queue."""

    async def count(topology: Topology) -> dict[str, int]:
        channel = await amqp.channel()
        try:
            counts = {}
            for kind, name in (
                ("main", topology.queue_name),
                ("retry", topology.retry_queue_name),
                ("dlq", topology.dead_letter_queue_name),
            ):
                queue = await channel.declare_queue(name, passive=True)
                counts[kind] = queue.declaration_result.message_count or 0
            return counts
        finally:
            await channel.close()

    return count
