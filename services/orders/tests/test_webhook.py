"""POST /v1/webhooks/orders: signatures (valid, wrong, stale, future, rotated), same path as the event."""

from __future__ import annotations

import time
import uuid

import orjson
import pytest
from orders import webhooks
from orders_helpers import Orders, eventually, fetch, new_address, order_data, outbox, started
from spm_common.testing.world import WEBHOOK_SECRET, World


async def by_order_id(orders: Orders, order_id: str) -> list:
    return await fetch(orders.world, "SELECT * FROM orders.orders WHERE order_id = $1", order_id)


async def test_a_signed_order_is_recorded_once(orders: Orders) -> None:
    data = order_data()
    first = await orders.webhook(data)
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "recorded"
    [order] = await by_order_id(orders, data["order_id"])
    assert str(order["id"]) == first.json()["id"]
    assert (order["via"], order["source"]) == ("webhook", orders.settings.orders_webhook_source)
    assert len(await outbox(orders.world, "notification.requested", data["purchaser"]["email"])) == 1

    again = await orders.webhook(data)
    assert again.json() == {"id": first.json()["id"], "status": "duplicate"}

    # The same order arriving as an event from the same source is the same order.
    await orders.publish("order.placed", data, source=orders.settings.orders_webhook_source)
    sentinel = order_data()
    await orders.publish("order.placed", sentinel, source=orders.settings.orders_webhook_source)
    await eventually(lambda: by_order_id(orders, sentinel["order_id"]), what="sentinel recorded")
    assert len(await by_order_id(orders, data["order_id"])) == 1
    assert len(await outbox(orders.world, "notification.requested", data["purchaser"]["email"])) == 1


async def test_an_order_placed_as_an_event_first_is_a_duplicate_on_the_webhook(orders: Orders) -> None:
    data = order_data()
    await orders.publish("order.placed", data, source=orders.settings.orders_webhook_source)
    [order] = await eventually(lambda: by_order_id(orders, data["order_id"]), what="recorded from the event")
    response = await orders.webhook(data)
    assert response.json() == {"id": str(order["id"]), "status": "duplicate"}


@pytest.mark.parametrize(
    ("case", "offset", "secrets", "accepted"),
    [
        ("fresh", 0, [WEBHOOK_SECRET], True),
        ("4m50s old", -290, [WEBHOOK_SECRET], True),
        ("4m50s ahead", 290, [WEBHOOK_SECRET], True),
        ("stale", -301, [WEBHOOK_SECRET], False),
        ("future", 301, [WEBHOOK_SECRET], False),
        ("wrong secret", 0, ["not-the-secret"], False),
        ("rotated: old and new", 0, ["the-old-secret", WEBHOOK_SECRET], True),
        ("rotated: new and old", 0, [WEBHOOK_SECRET, "the-old-secret"], True),
        ("rotated: old only", 0, ["the-old-secret"], False),
    ],
)
async def test_signatures(orders: Orders, case: str, offset: int, secrets: list[str], accepted: bool) -> None:
    data = order_data()
    response = await orders.webhook(data, secret=secrets, at=int(time.time()) + offset)
    assert response.status_code == (200 if accepted else 401), case
    assert len(await by_order_id(orders, data["order_id"])) == (1 if accepted else 0)
    if not accepted:
        assert response.json() == {"detail": "missing, invalid or expired signature"}


async def test_the_signature_covers_the_raw_body(orders: Orders) -> None:
    data = order_data()
    signed = orjson.dumps(data)
    sent = signed.replace(b'"49.00"', b'"0.01"', 1)  # same JSON shape, other bytes
    header = webhooks.header(WEBHOOK_SECRET, int(time.time()), signed)
    async with orders.client() as client:
        tampered = await client.post("/v1/webhooks/orders", content=sent, headers={"X-SPM-Signature": header})
        missing = await client.post("/v1/webhooks/orders", content=signed)
        garbled = await client.post("/v1/webhooks/orders", content=signed, headers={"X-SPM-Signature": "v1=zz,t=x"})
    assert (tampered.status_code, missing.status_code, garbled.status_code) == (401, 401, 401)
    # Whitespace is part of what was signed: a re-serialised body would not verify, the raw one does.
    pretty = orjson.dumps(data, option=orjson.OPT_INDENT_2)
    assert (await orders.webhook(None, raw=pretty)).status_code == 200


@pytest.mark.parametrize("stamp", ["\xb2", "\xb9\xb2", "1\xb3"])
async def test_a_timestamp_of_other_digits_is_refused_with_the_documented_401(orders: Orders, stamp: str) -> None:
    # Headers arrive as Latin-1: byte 0xB2 is "²", which str.isdigit() calls a digit but int() refuses.
    data = order_data()
    body = orjson.dumps(data)
    signature = f"t={stamp},v1={webhooks.sign(WEBHOOK_SECRET, int(time.time()), body)}".encode("latin-1")
    async with orders.client() as client:
        response = await client.post(
            "/v1/webhooks/orders",
            content=body,
            headers={"X-SPM-Signature": signature, "Content-Type": "application/json"},
        )
    assert response.status_code == 401
    assert response.json() == {"detail": "missing, invalid or expired signature"}
    assert await by_order_id(orders, data["order_id"]) == []


async def test_an_invalid_order_is_refused_without_echoing_it(orders: Orders) -> None:
    data = order_data()
    data["purchaser"]["email"] = "Nobody Special at example dot com"
    data["total"] = 49.0
    response = await orders.webhook(data)
    assert response.status_code == 422
    body = response.text
    assert "Nobody Special" not in body and "49.0" not in body
    assert {tuple(e["loc"]) for e in response.json()["detail"]} == {("purchaser", "email"), ("total",)}
    assert (await orders.webhook(None, raw=b"not json")).status_code == 422
    assert (await orders.webhook(order_data(sku="NOT-SOLD-HERE"))).status_code == 422


async def test_without_a_secret_every_call_is_refused(world: World) -> None:
    async with started(world, webhook_secret=None, exchange=f"{world.exchange}.{uuid.uuid4().hex[:6]}") as bare:
        for secret in ("", WEBHOOK_SECRET):
            data = order_data(new_address())
            body = orjson.dumps(data)
            async with bare.client() as client:
                response = await client.post(
                    "/v1/webhooks/orders",
                    content=body,
                    headers={"X-SPM-Signature": webhooks.header(secret, int(time.time()), body)},
                )
            assert response.status_code == 401
            assert await by_order_id(bare, data["order_id"]) == []
