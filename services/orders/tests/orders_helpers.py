"""Helpers of the orders service's tests (on sys.path through `pythonpath` in the root pyproject.toml)."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import aio_pika
import asyncpg
import httpx
import orjson
from fastapi import FastAPI
from orders import webhooks
from orders.app import create
from orders.settings import Settings
from spm_common.testing.outside import publish
from spm_common.testing.world import AMQP_URL, OPERATOR_TOKEN, WEBHOOK_SECRET, World
from spm_common.topology import Topology

T = TypeVar("T")


def random_ip() -> str:
    return f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


def new_address(tag: str = "buyer") -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}@example.com"


def new_order_id() -> str:
    return f"FS-2026-{uuid.uuid4().hex[:10].upper()}"


def order_data(
    email: str | None = None,
    *,
    sku: str = "SPM-DICT-PRO",
    quantity: int = 1,
    locale: str = "vi",
    consent: bool = False,
    placed_at: str = "2026-11-29T03:59:12Z",
    **overrides: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "order_id": new_order_id(),
        "placed_at": placed_at,
        "currency": "USD",
        "total": f"{49 * quantity}.00",
        "purchaser": {
            "name": "Nguyễn Văn Thử",
            "email": email or new_address(),
            "phone": "+84 912 345 678",
            "address": {
                "line1": "12 Tràng Tiền",
                "line2": None,
                "city": "Hà Nội",
                "region": None,
                "postal_code": "100000",
                "country": "VN",
            },
            "locale": locale,
        },
        "items": [{"sku": sku, "product_name": "SPM Dictionary Pro", "quantity": quantity, "unit_price": "49.00"}],
        "marketing_consent": consent,
    }
    data.update(overrides)
    return data


@dataclass
class Orders:
    app: FastAPI
    settings: Settings
    world: World

    def client(self, ip: str | None = None, *, operator: bool = False) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(ip or random_ip(), 50000))
        headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}"} if operator else {}
        return httpx.AsyncClient(transport=transport, base_url="http://orders.test", headers=headers)

    @property
    def exchange(self) -> str:
        return self.settings.exchange

    @property
    def topology(self) -> Topology:
        return Topology(self.settings.exchange, "orders")

    async def webhook(
        self, data: Any, *, secret: str | list[str] = WEBHOOK_SECRET, at: int | None = None, raw: bytes | None = None
    ) -> httpx.Response:
        body = raw if raw is not None else orjson.dumps(data)
        signature = webhooks.header(secret, at if at is not None else int(time.time()), body)
        async with self.client() as client:
            return await client.post(
                "/v1/webhooks/orders",
                content=body,
                headers={"X-SPM-Signature": signature, "Content-Type": "application/json"},
            )

    async def publish(self, event_type: str, data: Any, **kwargs: Any) -> str:
        return await publish(self.exchange, event_type, data, **kwargs)


@asynccontextmanager
async def started(world: World, **overrides: Any) -> AsyncIterator[Orders]:
    """The orders app running with its lifespan; `exchange=` gives it an exchange of its own."""
    settings = world.settings(Settings, **overrides)
    app = create(settings)
    async with app.router.lifespan_context(app):
        yield Orders(app, settings, world)


async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float = 10, what: str = "") -> T:
    """Poll `check` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"not met within {timeout}s: {what}")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def admin(world: World) -> AsyncIterator[asyncpg.Connection]:
    conn = await world.admin()
    try:
        yield conn
    finally:
        await conn.close()


async def fetch(world: World, query: str, *args: Any) -> list[asyncpg.Record]:
    async with admin(world) as conn:
        return await conn.fetch(query, *args)


async def outbox(world: World, event_type: str, contains: str | None = None) -> list[dict[str, Any]]:
    """Events of `event_type` the orders service enqueued (whose body mentions `contains`), oldest first."""
    rows = await fetch(
        world,
        "SELECT body FROM orders.outbox WHERE event_type = $1"
        " AND ($2::bytea IS NULL OR position($2::bytea IN body) > 0) ORDER BY id",
        event_type,
        contains.encode() if contains else None,
    )
    return [orjson.loads(row["body"]) for row in rows]


async def dead_letters(exchange: str, service: str = "orders") -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Take every message now in the service's dead-letter queue (they are acknowledged: gone)."""
    taken = []
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(Topology(exchange, service).dead_letter_queue_name, ensure=True)
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            taken.append(message)
    return taken


async def add_product(world: World, sku: str | None = None, major: int = 1) -> str:
    sku = sku or f"T-{uuid.uuid4().hex[:8].upper()}"
    async with admin(world) as conn:
        await conn.execute(
            "INSERT INTO orders.products (sku, name_en, name_vi, download_url, major_version)"
            " VALUES ($1, $2, $3, $4, $5)",
            sku,
            f"Test product {sku}",
            f"Sản phẩm thử {sku}",
            f"https://spmgroup.vn/dl/{sku.lower()}.exe",
            major,
        )
    return sku


async def seed_purchasers(world: World, sku: str, count: int) -> list[int]:
    """`count` purchasers of `sku`, written straight into the tables (as the benchmark does, only faster
    than placing orders): the fan-out reads purchasers and purchases only."""
    tag = uuid.uuid4().hex[:8]
    async with admin(world) as conn, conn.transaction():
        ids = await conn.fetch(
            "INSERT INTO orders.purchasers (email, name, locale, last_order_at)"
            " SELECT 'fan-' || $1 || '-' || g || '@example.com', 'Người mua ' || g,"
            " CASE WHEN g % 2 = 0 THEN 'vi' ELSE 'en' END, now() FROM generate_series(1, $2) g RETURNING id",
            tag,
            count,
        )
        await conn.execute(
            "INSERT INTO orders.purchases (sku, purchaser_id, last_placed_at) SELECT $1, id, now()"
            " FROM unnest($2::bigint[]) id",
            sku,
            [r["id"] for r in ids],
        )
    return [r["id"] for r in ids]


async def fanout_done(world: World, key: str) -> asyncpg.Record | None:
    rows = await fetch(world, "SELECT * FROM orders.fanouts WHERE key = $1 AND finished_at IS NOT NULL", key)
    return rows[0] if rows else None


async def requests_for(world: World, reference: str) -> list[dict[str, Any]]:
    """notification.requested events in the orders outbox with this reference."""
    rows = await fetch(
        world,
        "SELECT body FROM orders.outbox WHERE event_type = 'notification.requested'"
        " AND position($1::bytea IN body) > 0 ORDER BY id",
        orjson.dumps(reference),
    )
    return [orjson.loads(r["body"]) for r in rows]


def release(sku: str, **overrides: Any) -> dict[str, Any]:
    data = {
        "release_id": f"{sku}-{uuid.uuid4().hex[:6]}",
        "sku": sku,
        "version": "2.1.0",
        "released_at": "2026-11-29T00:00:00Z",
        "title": f"{sku} 2.1",
        "notes_url": "https://spmgroup.vn/notes/2.1",
        "download_url": "https://spmgroup.vn/dl/2.1.exe",
        "eligible_since": None,
        "new_registration": False,
    }
    data.update(overrides)
    return data
