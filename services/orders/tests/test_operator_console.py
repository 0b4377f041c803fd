"""What the console needs of the orders service: orders by the shop's order id, and an order's license keys
in full for an operator who must read one out (token required)."""

from __future__ import annotations

import uuid

from orders_helpers import Orders, fetch, new_address, order_data


async def test_orders_by_the_shops_id_and_keys_in_full(orders: Orders) -> None:
    data = order_data(new_address(), quantity=2)
    assert (await orders.webhook(data)).status_code == 200
    async with orders.client(operator=True) as operator:
        [found] = (await operator.get("/v1/orders", params={"order_id": data["order_id"]})).json()
        assert found["order_id"] == data["order_id"]
        assert (await operator.get("/v1/orders", params={"order_id": "FS-NO-SUCH"})).json() == []
        both = await operator.get("/v1/orders", params={"order_id": data["order_id"], "email": new_address()})
        assert both.status_code == 422

        keys = await operator.get(f"/v1/orders/{found['id']}/license-keys")
        assert keys.status_code == 200
        stored = await fetch(
            orders.world,
            "SELECT license_key FROM orders.license_keys WHERE order_id = $1::uuid ORDER BY id",
            found["id"],
        )
        assert [k["license_key"] for k in keys.json()] == [k["license_key"] for k in stored] and len(stored) == 2
        assert (await operator.get(f"/v1/orders/{uuid.uuid4()}/license-keys")).status_code == 404
    async with orders.client() as anonymous:
        assert (await anonymous.get(f"/v1/orders/{found['id']}/license-keys")).status_code == 401
