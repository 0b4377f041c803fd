"""What a fuzzer once found, replayed against each real service (served by uvicorn, on the real Postgres): every
value no column or clock can hold is a 422 in the documented shape, and the connection stays usable."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from audit.app import create as create_audit
from audit.settings import Settings as AuditSettings
from contact.app import create as create_contact
from contact.settings import Settings as ContactSettings
from fastapi import FastAPI
from notifier.app import create as create_notifier
from notifier.settings import Settings as NotifierSettings
from orders import webhooks
from orders.app import create as create_orders
from orders.settings import Settings as OrdersSettings
from spm_common.testing.world import OPERATOR_TOKEN, WEBHOOK_SECRET, World, serving

SERVICES: dict[str, tuple[Callable[[Any], FastAPI], type]] = {
    "contact": (create_contact, ContactSettings),
    "orders": (create_orders, OrdersSettings),
    "audit": (create_audit, AuditSettings),
    "notifier": (create_notifier, NotifierSettings),
}
AUTH = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
# (service, method, path and query as sent, the parameter the 422 must name)
REPORTED = [
    # NUL reached Postgres in a text search: 500
    ("contact", "GET", "/v1/messages?q=%00C", ["query", "q"]),
    # past bigint: 500 from asyncpg
    ("notifier", "GET", "/v1/deliveries?after_id=119768472599066981695488", ["query", "after_id"]),
    ("notifier", "POST", "/v1/deliveries/294037554819415926636544/retry", ["path", "delivery_id"]),
    ("audit", "GET", "/v1/audit/events?after=71170403026883596779520", ["query", "after"]),
    # an offset no clock has (-18:42) on a year-41 time: taken, and answered 200
    ("audit", "GET", "/v1/audit/events?to=0041-08-16T11:54:49.55571-18:42", ["query", "to"]),
    # a real offset, where the time in UTC falls before year 1: 500 from asyncpg
    ("audit", "GET", "/v1/audit/events?from=0001-01-01T00:00:00%2B14:00", ["query", "from"]),
]


@asynccontextmanager
async def client_of(world: World, service: str) -> AsyncIterator[httpx.AsyncClient]:
    create, settings_cls = SERVICES[service]
    async with (
        serving(create(world.settings(settings_cls))) as base_url,
        httpx.AsyncClient(base_url=base_url, headers=AUTH, timeout=30) as client,
    ):
        yield client


@pytest.mark.parametrize(("service", "method", "url", "loc"), REPORTED, ids=[f"{r[0]} {r[2]}" for r in REPORTED])
async def test_what_the_fuzzer_found_is_a_422_naming_the_parameter(
    world: World, service: str, method: str, url: str, loc: list[str]
) -> None:
    async with client_of(world, service) as client:
        response = await client.request(method, url)
        assert response.status_code == 422, response.text
        [error] = response.json()["detail"]
        assert error["loc"] == loc and set(error) == {"loc", "msg", "type"}
        value = url.rpartition("=")[2] if "?" in url else url.split("/")[3]
        assert value not in response.text  # the value is never echoed
        # Kept alive: the next request on the same client is answered as usual.
        assert (await client.get("/healthz")).status_code == 200


def _order(**changes: Any) -> dict[str, Any]:
    order = {
        "order_id": f"FS-EDGE-{time.time_ns()}",
        "placed_at": "2026-11-29T03:59:12Z",
        "currency": "USD",
        "total": "49.00",
        "purchaser": {"name": "Test Purchaser", "email": "edge-buyer@example.com"},
        "items": [{"sku": "SPM-DICT-PRO", "product_name": "SPM Dictionary Pro", "quantity": 1, "unit_price": "49.00"}],
    }
    return {**order, **changes}


async def test_an_order_whose_numbers_or_times_no_column_holds_is_refused(own_world: World) -> None:
    async with client_of(own_world, "orders") as client:
        for changes, field in (
            ({"privacy_policy_version": 2**40}, "privacy_policy_version"),  # past integer: was a 500
            ({"placed_at": "0001-01-01T00:00:00+14:00"}, "placed_at"),  # before year 1 in UTC: was a 500
            ({"placed_at": "2026-11-29T03:59:12+23:59"}, "placed_at"),  # no clock's offset
        ):
            body = json.dumps(_order(**changes)).encode()
            signature = webhooks.header(WEBHOOK_SECRET, int(time.time()), body)
            response = await client.post(
                "/v1/webhooks/orders",
                content=body,
                headers={"Content-Type": "application/json", "X-SPM-Signature": signature},
            )
            assert response.status_code == 422, response.text
            assert [e["loc"][-1] for e in response.json()["detail"]] == [field]
        valid = json.dumps(_order()).encode()
        signature = webhooks.header(WEBHOOK_SECRET, int(time.time()), valid)
        recorded = await client.post(
            "/v1/webhooks/orders",
            content=valid,
            headers={"Content-Type": "application/json", "X-SPM-Signature": signature},
        )
        assert (recorded.status_code, recorded.json()["status"]) == (200, "recorded")
