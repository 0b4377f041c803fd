"""Helpers of the console's tests (on sys.path through `pythonpath` in the root pyproject.toml)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import httpx
import orjson
import uvicorn
from audit.app import create as create_audit
from audit.settings import Settings as AuditSettings
from console import accounts, store
from console.app import create as create_console
from console.settings import Settings as ConsoleSettings
from contact.app import create as create_contact
from contact.settings import Settings as ContactSettings
from fastapi import FastAPI
from notifier.app import create as create_notifier
from notifier.settings import Settings as NotifierSettings
from orders import webhooks
from orders.app import create as create_orders
from orders.settings import Settings as OrdersSettings
from spm_common.brokerusers import MONITOR, broker_users, ensure_users, management_api, user_name
from spm_common.testing.smtp import free_port
from spm_common.testing.world import AMQP_URL, MANAGEMENT_URL, WEBHOOK_SECRET, World

T = TypeVar("T")
PASSWORD = "correct horse battery staple"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The test process keeps its own signal handlers (pytest's Ctrl-C).
        yield


@asynccontextmanager
async def served(app: FastAPI, port: int) -> AsyncIterator[str]:
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_config=None, access_log=False))
    task = asyncio.create_task(server.serve())
    deadline = asyncio.get_running_loop().time() + 60
    while not server.started:
        if task.done():
            task.result()
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("server did not start")
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@dataclass
class System:
    world: World
    console_url: str
    contact_url: str
    orders_url: str
    console: ConsoleSettings
    notifier_url: str = ""
    audit_url: str = ""

    async def db(self) -> asyncpg.Connection:
        conn = await self.world.admin()
        await conn.execute("SET search_path TO console")
        return conn

    async def operator(self, role: str = "support", *, must_change: bool = False, password: str = PASSWORD) -> str:
        """A new account with a known password; returns its address."""
        email = f"op-{uuid.uuid4().hex[:8]}@spmgroup.vn"
        conn = await self.db()
        try:
            row = await store.insert_operator(conn, email, role, accounts.hash_password(password))
            assert row is not None
            await store.set_password(conn, row.id, row.password_hash, must_change)
        finally:
            await conn.close()
        return email

    async def post_message(self, **fields: Any) -> str:
        body = {
            "name": "Trần Văn Khách",
            "email": f"visitor-{uuid.uuid4().hex[:8]}@example.com",
            "subject": "Hỏi về bản quyền",
            "message": "Xin chào",
        }
        body.update(fields)
        async with httpx.AsyncClient(base_url=self.contact_url) as client:
            response = await client.post("/v1/messages", json=body)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    async def place_order(self, email: str, *, consent: bool = False) -> str:
        """An order through the shop's signed webhook (`consent`: to news); returns its id at the shop."""
        order_id = f"FS-2026-{uuid.uuid4().hex[:10].upper()}"
        body = orjson.dumps(
            {
                "order_id": order_id,
                "placed_at": "2026-11-29T03:59:12Z",
                "currency": "USD",
                "total": "49.00",
                "purchaser": {"name": "Lê Thị Mua", "email": email, "phone": "+84 912 000 222", "locale": "vi"},
                "items": [
                    {"sku": "SPM-DICT-PRO", "product_name": "SPM Dictionary Pro", "quantity": 1, "unit_price": "49.00"}
                ],
                "marketing_consent": consent,
            }
        )
        signature = webhooks.header(WEBHOOK_SECRET, int(time.time()), body)
        async with httpx.AsyncClient(base_url=self.orders_url) as client:
            response = await client.post(
                "/v1/webhooks/orders",
                content=body,
                headers={"X-SPM-Signature": signature, "Content-Type": "application/json"},
            )
        assert response.status_code < 300, response.text
        return order_id

    async def license_keys(self, shop_order_id: str) -> list[str]:
        conn = await self.world.admin()
        try:
            rows = await conn.fetch(
                "SELECT k.license_key FROM orders.license_keys k JOIN orders.orders o ON o.id = k.order_id"
                " WHERE o.order_id = $1",
                shop_order_id,
            )
        finally:
            await conn.close()
        return [row["license_key"] for row in rows]

    async def trail(self, event_type: str) -> list[asyncpg.Record]:
        """The audit trail's entries of that type, oldest first."""
        conn = await self.world.admin()
        try:
            return await conn.fetch("SELECT * FROM audit.entries WHERE event_type = $1 ORDER BY seq", event_type)
        finally:
            await conn.close()

    async def actions(self, operator: str) -> list[dict[str, Any]]:
        """The operator.action events the console has put in its outbox for this operator, oldest first."""
        conn = await self.db()
        try:
            rows = await conn.fetch("SELECT body FROM outbox WHERE event_type = 'operator.action' ORDER BY id")
        finally:
            await conn.close()
        events = [orjson.loads(row["body"])["data"] for row in rows]
        return [e for e in events if e["operator"] == operator]


@asynccontextmanager
async def monitor_login(world: World) -> AsyncIterator[str]:
    """The console's read-only `spm_monitor` user, as `spm-admin bootstrap` makes it, named for this world (users
    are broker-wide); yields the management API's URL with its login."""
    [monitor] = [
        u for u in broker_users(world.exchange, f"{world.name}_") if u.name == user_name(MONITOR, f"{world.name}_")
    ]
    password = uuid.uuid4().hex
    await ensure_users(MANAGEMENT_URL, AMQP_URL, [monitor], {monitor.name: password})
    api = management_api(MANAGEMENT_URL)
    try:
        yield api.base_url.replace("://", f"://{monitor.name}:{password}@", 1)
    finally:
        async with httpx.AsyncClient(base_url=api.base_url, auth=api.auth) as client:
            await client.delete(f"/api/users/{monitor.name}")


@asynccontextmanager
async def system_running(world: World, **console_overrides: Any) -> AsyncIterator[System]:
    contact_port, notifier_port, orders_port, console_port = free_port(), free_port(), free_port(), free_port()
    audit_port = free_port()
    contact = world.settings(ContactSettings, contact_port=contact_port)
    orders = world.settings(OrdersSettings, orders_port=orders_port)
    # One attempt, polled often: a test makes an e-mail fail at once, and a retried one go out soon.
    notifier = world.settings(
        NotifierSettings, notifier_port=notifier_port, notifier_max_attempts=1, notifier_poll_seconds=0.2
    )
    # The console's operator.action events end in the audit trail; the system page asks it to verify the chain.
    audit = world.settings(AuditSettings, audit_port=audit_port, audit_checkpoint_seconds=3600)
    async with (
        served(create_contact(contact), contact_port) as contact_url,
        served(create_notifier(notifier), notifier_port) as notifier_url,
        served(create_orders(orders), orders_port) as orders_url,
        served(create_audit(audit), audit_port) as audit_url,
        monitor_login(world) as monitor_url,
    ):
        console = world.settings(
            ConsoleSettings,
            console_port=console_port,
            console_contact_url=contact_url,
            console_orders_url=orders_url,
            console_notifier_url=notifier_url,
            console_audit_url=audit_url,
            **{"console_rabbitmq_monitor_url": monitor_url, **console_overrides},
        )
        async with served(create_console(console), console_port) as console_url:
            yield System(world, console_url, contact_url, orders_url, console, notifier_url, audit_url)


def csrf_of(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


@asynccontextmanager
async def logged_in(system: System, email: str, password: str = PASSWORD) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client holding a session of that operator."""
    async with httpx.AsyncClient(base_url=system.console_url) as client:
        page = await client.get("/login")
        response = await client.post(
            "/login", data={"email": email, "password": password, "csrf_token": csrf_of(page.text)}
        )
        assert response.status_code == 303, response.text
        yield client


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout: float = 20, what: str = "condition") -> T:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await probe()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{what} not met within {timeout}s")
        await asyncio.sleep(0.1)
