"""The work a scenario drives through the running services, sent the way their real clients send it, and
what each client was told: accepted, refused, or not known (no answer, or a 5xx: a timeout, a cut connection
or a database lost mid-write, after which the item may or may not have been taken).

- contact messages: the website's form, `POST /v1/messages` (accepted on 202; a form is not sent again);
- orders: `order.placed` CloudEvents published by the shop with aio-pika and publisher confirms, and a
  share through the signed webhook `POST /v1/webhooks/orders`; the shop sends an order again, same id, until
  it is confirmed (so a redelivery is part of the work, and must change nothing);
- page views: the website's beacon, `POST /v1/pageviews`, with a browser's user agent;
- an upgrade fan-out: `upgrade.released` for a product of the scenario's own that its first purchasers bought.

Every address, order id and page path carries the scenario's name, so the checkers count one scenario's
work only, although every scenario runs in the same world.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aio_pika
import httpx
import orjson
from orders import webhooks
from spm_common.envelope import CloudEvent, amqp_message
from spm_common.testing.world import AMQP_URL, WEBHOOK_SECRET

from .harness import System

SHOP = "https://shop.example/orders"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
REGULAR_SKU = "SPM-DICT-PRO"
# The first orders of a scenario buy its own product; the upgrade of that product goes to them alone.
UPGRADE_BUYERS = 6
# How long a client keeps sending one item again before it gives up (the outcome is then not known).
GIVE_UP_SECONDS = 30.0


def slug_of(label: str) -> str:
    return "-".join("".join(ch if ch.isalnum() else " " for ch in label.lower()).split())


async def _paced(stop: asyncio.Event, per_second: float) -> Any:
    """Yield 0, 1, 2, ... at `per_second` until `stop` is set (a slow answer delays the next item)."""
    for n in itertools.count():
        if stop.is_set():
            return
        yield n
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1 / per_second)


class ContactStream:
    def __init__(self, system: System, slug: str) -> None:
        self.system = system
        self.slug = slug
        self.accepted: list[str] = []
        self.unknown: list[str] = []  # no answer: stored at most once
        self.refused = 0

    def address(self, n: int) -> str:
        return f"fault-{self.slug}-c{n}@example.com"

    async def run(self, stop: asyncio.Event, per_second: float) -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            async for n in _paced(stop, per_second):
                address = self.address(n)
                try:
                    response = await client.post(
                        f"{self.system.url('contact')}/v1/messages",
                        json={"name": "Fault Tester", "email": address, "message": "fault suite"},
                    )
                except httpx.HTTPError:  # no answer (a timeout, a cut connection): it may have been stored
                    self.unknown.append(address)
                    continue
                if response.status_code == 202:
                    self.accepted.append(address)
                elif response.status_code >= 500:  # e.g. a 503: the database went away, perhaps mid-write
                    self.unknown.append(address)
                else:
                    self.refused += 1


class PageViewStream:
    def __init__(self, system: System, slug: str) -> None:
        self.system = system
        self.slug = slug
        self.accepted: list[str] = []
        self.unknown: list[str] = []  # no answer: counted at most once
        self.refused = 0

    async def run(self, stop: asyncio.Event, per_second: float) -> None:
        async with httpx.AsyncClient(timeout=5, headers={"User-Agent": BROWSER}) as client:
            async for n in _paced(stop, per_second):
                path = f"/fault/{self.slug}/{n}"
                try:
                    response = await client.post(
                        f"{self.system.url('audit')}/v1/pageviews",
                        json={"url": f"https://spmgroup.vn{path}", "referrer": "https://search.example/"},
                    )
                except httpx.HTTPError:
                    self.unknown.append(path)
                    continue
                if response.status_code == 202:
                    self.accepted.append(path)
                elif response.status_code >= 500:
                    self.unknown.append(path)
                else:
                    self.refused += 1


class OrderStream:
    """Orders from the shop: most as `order.placed` events, every third through the webhook."""

    def __init__(self, system: System, slug: str, upgrade_sku: str) -> None:
        self.system = system
        self.slug = slug
        self.upgrade_sku = upgrade_sku
        self.accepted: dict[str, str] = {}  # order id -> purchaser address
        self.unknown: dict[str, str] = {}  # gave up without a confirmation: recorded at most once
        self.refused: dict[str, str] = {}  # a definite no (a 4xx from the webhook), and why
        self.event_ids: list[str] = []  # of the order.placed events the broker confirmed
        self.via = {"event": 0, "webhook": 0}
        self._numbers = itertools.count()
        self._exchange: aio_pika.abc.AbstractExchange | None = None
        self._connection: aio_pika.abc.AbstractConnection | None = None

    @staticmethod
    def buys_upgrade(order_id: str) -> bool:
        return int(order_id.rsplit("-", 1)[1]) < UPGRADE_BUYERS

    @property
    def upgrade_buyers(self) -> list[str]:
        return [a for o, a in self.accepted.items() if self.buys_upgrade(o)]

    @property
    def upgrade_buyers_decided(self) -> bool:
        """Whether the shop knows the outcome of every order of the scenario's product."""
        decided = [o for o in (*self.accepted, *self.unknown, *self.refused) if self.buys_upgrade(o)]
        return len(decided) == UPGRADE_BUYERS

    def _next(self) -> tuple[str, str, dict[str, Any]]:
        n = next(self._numbers)
        order_id, address = f"FT-{self.slug}-{n}", f"fault-{self.slug}-o{n}@example.com"
        sku = self.upgrade_sku if n < UPGRADE_BUYERS else REGULAR_SKU
        data = {
            "order_id": order_id,
            "placed_at": datetime.now(UTC).isoformat(),
            "currency": "USD",
            "total": "49.00",
            "purchaser": {"name": "Fault Tester", "email": address, "locale": "vi" if n % 2 else "en"},
            "items": [{"sku": sku, "product_name": "Fault suite product", "quantity": 1, "unit_price": "49.00"}],
            "marketing_consent": False,
        }
        return order_id, address, data

    async def publish(self, event: CloudEvent) -> bool:
        """Publish until the broker confirms it (the same event again after a failure), or give up."""
        deadline = time.monotonic() + GIVE_UP_SECONDS
        while time.monotonic() < deadline:
            try:
                if self._exchange is None:
                    self._connection = await aio_pika.connect(AMQP_URL, timeout=5)
                    channel = await self._connection.channel()  # publisher confirms: on by default
                    self._exchange = await channel.get_exchange(self.system.world.exchange, ensure=False)
                await self._exchange.publish(amqp_message(event), routing_key=event.type, timeout=5)
                return True
            except Exception:  # broker away or connection cut: the shop connects again and resends
                await self.close()
                await asyncio.sleep(0.5)
        return False

    async def close(self) -> None:
        connection, self._connection, self._exchange = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()

    async def place_by_event(self) -> None:
        order_id, address, data = self._next()
        event = CloudEvent(id=str(uuid.uuid4()), type="order.placed", source=SHOP, time=datetime.now(UTC), data=data)
        if await self.publish(event):
            self.accepted[order_id] = address
            self.event_ids.append(event.id)
            self.via["event"] += 1
        else:
            self.unknown[order_id] = address

    async def place_by_webhook(self, client: httpx.AsyncClient) -> None:
        order_id, address, data = self._next()
        body = orjson.dumps(data)
        deadline = time.monotonic() + GIVE_UP_SECONDS
        while time.monotonic() < deadline:
            signature = webhooks.header(WEBHOOK_SECRET, int(time.time()), body)
            try:
                response = await client.post(
                    f"{self.system.url('orders')}/v1/webhooks/orders",
                    content=body,
                    headers={"X-SPM-Signature": signature, "Content-Type": "application/json"},
                )
            except httpx.HTTPError:  # no answer: it may or may not be recorded; the shop sends it again
                await asyncio.sleep(0.5)
                continue
            if response.status_code == 200:  # "recorded", or "duplicate" of an earlier try
                self.accepted[order_id] = address
                self.via["webhook"] += 1
                return
            if response.status_code < 500:
                self.refused[order_id] = f"{response.status_code} {response.text[:200]}"
                return
            await asyncio.sleep(0.5)
        self.unknown[order_id] = address

    async def run_events(self, stop: asyncio.Event, per_second: float) -> None:
        async for _ in _paced(stop, per_second):
            await self.place_by_event()

    async def run_webhook(self, stop: asyncio.Event, per_second: float) -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            async for _ in _paced(stop, per_second):
                await self.place_by_webhook(client)

    async def release_upgrade(self) -> str:
        """Publish `upgrade.released` for the scenario's product; returns the event id."""
        release_id, event_id = f"{self.upgrade_sku}-2.0.0", str(uuid.uuid4())
        event = CloudEvent(
            id=event_id,
            type="upgrade.released",
            source=SHOP,
            time=datetime.now(UTC),
            data={
                "release_id": release_id,
                "sku": self.upgrade_sku,
                "version": "2.0.0",
                "released_at": datetime.now(UTC).isoformat(),
                "title": "Fault suite product 2.0",
                "notes_url": "https://spmgroup.vn/notes/2.0",
                "download_url": "https://spmgroup.vn/dl/fault-2.0.0.exe",
                "eligible_since": None,
                "new_registration": True,
            },
        )
        assert await self.publish(event), "the upgrade release was published"
        return event_id


class Workload:
    """Every kind of work at once, at modest rates (tens of items of each kind in a scenario)."""

    def __init__(self, system: System, label: str, upgrade_sku: str) -> None:
        # Unique per run, so a scenario run again (by hand, in the same database) counts only its own work.
        self.slug = f"{slug_of(label)}-{uuid.uuid4().hex[:4]}"
        self.contact = ContactStream(system, self.slug)
        self.orders = OrderStream(system, self.slug, upgrade_sku)
        self.views = PageViewStream(system, self.slug)
        self.release_event_id: str | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self.contact.run(self._stop, per_second=3)),
            asyncio.create_task(self.orders.run_events(self._stop, per_second=2)),
            asyncio.create_task(self.orders.run_webhook(self._stop, per_second=1)),
            asyncio.create_task(self.views.run(self._stop, per_second=3)),
        ]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self.orders.close()
