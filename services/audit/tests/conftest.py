"""Fixtures of the audit service's tests: one audit service in the session's world, a superuser connection
(the attacker's view of the database), and a publisher that sends CloudEvents the way CONTRACT section 3 says.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import aio_pika
import asyncpg
import httpx
import orjson
import pytest
from audit.app import create
from audit.settings import Settings
from spm_common.testing.world import AMQP_URL, OPERATOR_TOKEN, World, running

OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


def audit_settings(world: World, **overrides: Any) -> Settings:
    return world.settings(
        Settings, **{"trusted_proxies": "127.0.0.1/32", "audit_checkpoint_seconds": 3600, **overrides}
    )


@pytest.fixture(scope="session")
async def audit(world: World) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create(audit_settings(world))) as client:
        yield client


@pytest.fixture(scope="session")
async def admin(world: World) -> AsyncIterator[asyncpg.Connection]:
    conn = await world.admin()
    yield conn
    await conn.close()


def event(event_type: str, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "type": event_type,
        "source": "urn:test:audit",
        "time": datetime.now(UTC).isoformat(),
        "datacontenttype": "application/json",
        "data": data,
        **extra,
    }


async def publish(world: World, events: Sequence[dict[str, Any]]) -> None:
    """Publish with CONTRACT section 3's AMQP properties, waiting for the broker's confirms."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(world.exchange)
        for start in range(0, len(events), 500):
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(
                            orjson.dumps(e),
                            message_id=e["id"],
                            type=e["type"],
                            content_type="application/cloudevents+json",
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=e["type"],
                    )
                    for e in events[start : start + 500]
                )
            )


async def wait_for_entries(admin: asyncpg.Connection, event_ids: Sequence[str], timeout: float = 20) -> list[Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        rows = await admin.fetch(
            "SELECT * FROM audit.entries WHERE event_id = ANY($1::text[]) ORDER BY seq", list(event_ids)
        )
        if len(rows) >= len(event_ids):
            return rows
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{len(rows)} of {len(event_ids)} events in the trail")
        await asyncio.sleep(0.05)


class Kit:
    """The helpers above, for the tests (a test module cannot import conftest under importlib mode)."""

    operator = OPERATOR
    browser = BROWSER
    event = staticmethod(event)
    wait_for_entries = staticmethod(wait_for_entries)
    settings = staticmethod(audit_settings)

    def __init__(self, world: World) -> None:
        self.world = world

    async def publish(self, events: Sequence[dict[str, Any]]) -> None:
        await publish(self.world, events)


@pytest.fixture(scope="session")
def kit(world: World) -> Kit:
    return Kit(world)
