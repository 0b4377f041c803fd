"""The examples in docs/asyncapi/orders.yaml work: each, published as the shop or the release pipeline
publishes it, is accepted and acted on (the order recorded; the release and the news fanned out)."""

from __future__ import annotations

from typing import Any

import yaml
from orders.events import ORDER_PLACED, PRODUCT_ANNOUNCED, UPGRADE_RELEASED
from orders_helpers import Orders, eventually, fanout_done, fetch, requests_for
from spm_common.admin import generated_documents


def documented_example(event_type: str) -> dict[str, Any]:
    [orders_yaml] = [asyncapi for service, asyncapi, _ in generated_documents() if service == "orders"]
    [example] = yaml.safe_load(orders_yaml)["components"]["messages"][event_type.replace(".", "_")]["examples"]
    envelope: dict[str, Any] = example["payload"]
    return envelope


async def publish_example(orders: Orders, event_type: str) -> dict[str, Any]:
    envelope = documented_example(event_type)
    await orders.publish(event_type, envelope["data"], source=envelope["source"])
    return envelope["data"]


async def test_each_documented_example_is_accepted_end_to_end(orders: Orders) -> None:
    order = await publish_example(orders, ORDER_PLACED)
    [recorded] = await eventually(
        lambda: fetch(orders.world, "SELECT * FROM orders.orders WHERE order_id = $1", order["order_id"]),
        what="the example order recorded",
    )
    assert recorded["marketing_consent"] is True
    buyer = order["purchaser"]["email"]

    release = await publish_example(orders, UPGRADE_RELEASED)
    await eventually(lambda: fanout_done(orders.world, release["release_id"]), timeout=60, what="release fan-out")
    notices = await requests_for(orders.world, f"release:{release['release_id']}")
    assert buyer in {n["data"]["recipient"]["email"] for n in notices}

    news = await publish_example(orders, PRODUCT_ANNOUNCED)
    await eventually(lambda: fanout_done(orders.world, news["announcement_id"]), timeout=60, what="news fan-out")
    sent = await requests_for(orders.world, f"announcement:{news['announcement_id']}")
    assert buyer in {n["data"]["recipient"]["email"] for n in sent}
