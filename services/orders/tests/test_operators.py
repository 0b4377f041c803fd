"""Operators: look-up by address and by id (token required), and the command-line tool."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
import orjson
from orders.admin import cli
from orders_helpers import Orders, eventually, fanout_done, fetch, new_address, order_data, seed_purchasers
from spm_common.testing.world import AMQP_URL
from typer.testing import CliRunner


async def test_orders_of_one_address_and_one_order_need_the_token(orders: Orders) -> None:
    email = new_address()
    first, second = order_data(email, placed_at="2026-11-01T00:00:00Z"), order_data(email, quantity=2)
    for data in (first, second):
        assert (await orders.webhook(data)).status_code == 200
    async with orders.client() as anonymous:
        assert (await anonymous.get("/v1/orders", params={"email": email})).status_code == 401
    async with orders.client(operator=True) as operator:
        listed = await operator.get("/v1/orders", params={"email": email.upper()})
        assert listed.status_code == 200
        found = listed.json()
        assert [o["order_id"] for o in found] == [second["order_id"], first["order_id"]]
        newest = found[0]
        assert newest["purchaser"]["email"] == email and newest["total"] == "98.00"
        assert [k["hint"][-5:] for k in newest["license_keys"]] and len(newest["license_keys"]) == 2
        keys = await fetch(
            orders.world, "SELECT license_key FROM orders.license_keys WHERE order_id = $1::uuid", newest["id"]
        )
        assert all(k["license_key"] not in listed.text for k in keys)  # hints only

        one = await operator.get(f"/v1/orders/{newest['id']}")
        assert one.status_code == 200 and one.json() == newest
        assert (await operator.get(f"/v1/orders/{uuid.uuid4()}")).status_code == 404
        assert (await operator.get("/v1/orders", params={"email": new_address()})).json() == []
        assert (await operator.get("/v1/orders")).status_code == 422  # no listing of everyone
    async with orders.client() as anonymous:
        assert (await anonymous.get(f"/v1/orders/{newest['id']}")).status_code == 401


def run_cli(orders: Orders, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env=orders.world.env(SPM_EXCHANGE=orders.exchange))
    return result.exit_code, result.output


async def test_the_cli_adds_products_publishes_releases_and_news_and_looks_up_a_purchaser(orders: Orders) -> None:
    sku = f"T-CLI-{uuid.uuid4().hex[:6].upper()}"
    code, out = await asyncio.to_thread(
        run_cli, orders, "product", "add", sku, "--name-en", "CLI Product", "--name-vi", "Sản phẩm CLI",
        "--download-url", "https://spmgroup.vn/dl/cli.exe", "--major-version", "4",
    )  # fmt: skip
    assert code == 0, out
    [product] = await fetch(orders.world, "SELECT * FROM orders.products WHERE sku = $1", sku)
    assert (product["name_vi"], product["major_version"]) == ("Sản phẩm CLI", 4)
    code, out = await asyncio.to_thread(run_cli, orders, "product", "add", "bad sku", "--name-en", "x",
                                        "--name-vi", "y", "--download-url", "not a url", "--major-version", "1")  # fmt: skip
    assert code == 2 and "sku" in out and "download_url" in out

    # A queue of our own on the exchange shows what the CLI published and how.
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(orders.exchange, routing_key="upgrade.released")
        email = new_address()
        assert (await orders.webhook(order_data(email, sku=sku))).status_code == 200
        await seed_purchasers(orders.world, sku, 3)
        release_id = f"{sku}-4.1.0"
        code, out = await asyncio.to_thread(
            run_cli, orders, "publish", "upgrade", "--release-id", release_id, "--sku", sku, "--version", "4.1.0",
            "--title", "CLI Product 4.1", "--download-url", "https://spmgroup.vn/dl/cli-4.1.exe", "--new-registration",
        )  # fmt: skip
        assert code == 0, out
        message = await eventually(lambda: queue.get(no_ack=True, fail=False), what="published")
        assert message.content_type == "application/cloudevents+json"
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        event = orjson.loads(message.body)
        assert (message.type, message.message_id, message.routing_key) == (
            event["type"],
            event["id"],
            "upgrade.released",
        )
        assert event["specversion"] == "1.0" and event["data"]["new_registration"] is True
    done = await eventually(lambda: fanout_done(orders.world, release_id), what="fan-out of the CLI's release")
    assert done["notified"] == 4

    code, out = await asyncio.to_thread(run_cli, orders, "publish", "upgrade", "--release-id", "x", "--sku", sku,
                                        "--version", "not-a-version", "--title", "t", "--download-url", "ftp://x")  # fmt: skip
    assert code == 2 and "version" in out

    code, out = await asyncio.to_thread(run_cli, orders, "purchaser", email)
    assert code == 0, out
    assert "Nguyễn Văn Thử" in out and "orders: 1" in out and "license keys: 2" in out
    keys = await fetch(orders.world, "SELECT license_key FROM orders.license_keys k JOIN orders.purchasers p"
                       " ON p.id = k.purchaser_id WHERE p.email = $1", email)  # fmt: skip
    assert all(k["license_key"] not in out for k in keys)
    code, out = await asyncio.to_thread(run_cli, orders, "purchaser", new_address())
    assert code == 1 and "no purchaser" in out

    code, out = await asyncio.to_thread(run_cli, orders, "fanouts")
    assert code == 0 and release_id in out and "4 notified" in out
