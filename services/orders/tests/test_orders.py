"""order.placed through RabbitMQ: what is recorded, what is published, duplicates and invalid orders."""

from __future__ import annotations

import re

from orders.licenses import KEY_PATTERN
from orders_helpers import Orders, dead_letters, eventually, fetch, new_address, order_data, outbox


async def recorded(orders: Orders, email: str, count: int = 1) -> list:
    async def check() -> list | None:
        rows = await fetch(
            orders.world,
            "SELECT o.* FROM orders.orders o JOIN orders.purchasers p ON p.id = o.purchaser_id"
            " WHERE p.email = $1 ORDER BY o.placed_at",
            email,
        )
        return rows if len(rows) >= count else None

    return await eventually(check, what=f"{count} order(s) recorded")


async def test_an_order_is_recorded_with_keys_and_a_confirmation(orders: Orders) -> None:
    email = new_address()
    data = order_data(email.upper(), quantity=2, consent=True)
    data["items"].append({"sku": "SPM-OCR", "product_name": "SPM OCR", "quantity": 1, "unit_price": "19.90"})
    data["total"] = "117.90"
    await orders.publish("order.placed", data)

    [order] = await recorded(orders, email)
    assert order["order_id"] == data["order_id"]
    assert str(order["total"]) == "117.90"
    assert order["via"] == "event" and order["marketing_consent"] and not order["card_data_removed"]
    items = await fetch(orders.world, "SELECT * FROM orders.order_items WHERE order_id = $1 ORDER BY line", order["id"])
    assert [(i["sku"], i["quantity"], str(i["unit_price"])) for i in items] == [
        ("SPM-DICT-PRO", 2, "49.00"),
        ("SPM-OCR", 1, "19.90"),
    ]
    keys = await fetch(orders.world, "SELECT * FROM orders.license_keys WHERE order_id = $1", order["id"])
    assert len(keys) == 3 and len({k["license_key"] for k in keys}) == 3
    assert all(KEY_PATTERN.match(k["license_key"]) for k in keys)
    [consent] = await fetch(orders.world, "SELECT * FROM orders.consents WHERE order_id = $1", order["id"])
    assert consent["policy_version"] == 1 and consent["withdrawn_at"] is None

    [request] = await eventually(lambda: outbox(orders.world, "notification.requested", email), what="confirmation")
    assert request["purpose"] == "fulfil-order"
    note = request["data"]
    assert note["template"] == "order-confirmation" and note["locale"] == "vi"
    assert note["recipient"] == {"email": email, "name": "Nguyễn Văn Thử"}
    assert set(note["context"]) == {"order_id", "currency", "total", "items"}
    assert note["context"]["total"] == "117.90"
    lines = note["context"]["items"]
    assert [set(line) for line in lines] == [{"product_name", "quantity", "download_url", "license_keys"}] * 2
    assert lines[0]["product_name"] == "Từ điển SPM Pro" and lines[0]["quantity"] == 2
    assert sorted(k for line in lines for k in line["license_keys"]) == sorted(k["license_key"] for k in keys)

    [fact] = await outbox(orders.world, "order.recorded", data["order_id"])
    assert fact["data"]["license_keys_issued"] == 3
    for key in keys:  # keys travel only in the request that delivers them
        assert key["license_key"] not in str(fact)


async def test_the_same_order_with_a_new_event_id_changes_nothing(orders: Orders) -> None:
    email = new_address()
    data = order_data(email)
    await orders.publish("order.placed", data)
    [order] = await recorded(orders, email)
    changed = {**data, "purchaser": {**data["purchaser"], "name": "Someone Else"}, "total": "1.00"}
    await orders.publish("order.placed", changed)  # same source and order id, new event id
    second = order_data(email)  # a later, different order from the same address proves the first was consumed
    await orders.publish("order.placed", second)
    rows = await recorded(orders, email, 2)
    assert [r["order_id"] for r in rows] == [data["order_id"], second["order_id"]]
    assert rows[0]["total"] == order["total"]
    [purchaser] = await fetch(orders.world, "SELECT name FROM orders.purchasers WHERE email = $1", email)
    assert purchaser["name"] == "Nguyễn Văn Thử"
    assert len(await outbox(orders.world, "notification.requested", email)) == 2


async def test_a_newer_order_updates_the_purchaser_an_older_one_does_not(orders: Orders) -> None:
    email = new_address()
    await orders.publish("order.placed", order_data(email, placed_at="2026-11-20T00:00:00Z"))
    await recorded(orders, email)
    newer = order_data(email, placed_at="2026-11-25T00:00:00Z", locale="en")
    newer["purchaser"].update(name="Tran Thi Moi", phone="+84 900 000 001")
    await orders.publish("order.placed", newer)
    await recorded(orders, email, 2)
    older = order_data(email, placed_at="2026-11-01T00:00:00Z")
    older["purchaser"].update(name="Old Name")
    await orders.publish("order.placed", older)
    await recorded(orders, email, 3)
    [p] = await fetch(orders.world, "SELECT * FROM orders.purchasers WHERE email = $1", email)
    assert (p["name"], p["phone"], p["locale"]) == ("Tran Thi Moi", "+84 900 000 001", "en")


async def test_an_invalid_order_is_dead_lettered_with_its_reason(orders: Orders) -> None:
    bad = order_data(total=12.5)  # money as a float
    bad["purchaser"]["email"] = "not-an-address"
    event_id = await orders.publish("order.placed", bad)
    unknown = order_data(sku="NO-SUCH-SKU")
    unknown_id = await orders.publish("order.placed", unknown)

    async def both() -> list | None:
        found.extend(await dead_letters(orders.exchange))
        ids = {m.message_id for m in found}
        return found if {event_id, unknown_id} <= ids else None

    found: list = []
    await eventually(both, what="both dead-lettered")
    reasons = {m.message_id: m.headers["x-spm-error"] for m in found}
    # The consumer validated the payload into the model the handler names, before any transaction.
    assert reasons[event_id].startswith("ValidationError: 2 validation error(s) for OrderPlaced: total: ")
    assert "purchaser.email: " in reasons[event_id]
    assert "not-an-address" not in reasons[event_id]
    assert "unknown product sku: NO-SUCH-SKU" in reasons[unknown_id]
    rows = await fetch(
        orders.world, "SELECT 1 FROM orders.orders WHERE order_id = ANY($1)", [bad["order_id"], unknown["order_id"]]
    )
    assert rows == []
    assert re.fullmatch(r"[0-9a-f-]{36}", event_id)


async def test_a_correlation_id_is_carried_on_only_when_it_is_a_plain_token(orders: Orders) -> None:
    """A shop's `correlationid` is logged and copied into every event the order causes: a plain token is,
    anything else (here an address with a header line after it) is dropped, and the order is still taken."""
    plain, odd = order_data(new_address()), order_data(new_address())
    await orders.publish("order.placed", plain, envelope={"correlationid": "shop-trace.42_A"})
    await orders.publish("order.placed", odd, envelope={"correlationid": "buyer@example.com\r\nBcc: x@example.com"})
    await recorded(orders, plain["purchaser"]["email"])
    await recorded(orders, odd["purchaser"]["email"])
    [fact] = await outbox(orders.world, "order.recorded", plain["order_id"])
    assert fact["correlationid"] == "shop-trace.42_A"
    for event_type in ("order.recorded", "notification.requested"):
        [made] = await outbox(orders.world, event_type, odd["order_id"])
        assert "correlationid" not in made, made
    # Once refused by length alone (over 200 characters): the order was dead-lettered.
    long = order_data(new_address())
    await orders.publish("order.placed", long, envelope={"correlationid": "x" * 300})
    await recorded(orders, long["purchaser"]["email"])
