"""POST /v1/license-recovery: the same answer for known and unknown addresses, mail only to the owner,
rate limits per client and per address that hold across restarts."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest
from orders.settings import Settings
from orders_helpers import Orders, fetch, new_address, order_data, outbox, random_ip, started
from spm_common.testing.clock import clear_of_window_edges
from spm_common.testing.world import World

FLOOR = 0.1


@pytest.fixture(scope="module")
async def orders(world: World) -> AsyncIterator[Orders]:
    async with started(world, orders_recovery_min_seconds=FLOOR) as service:
        yield service


async def bought(orders: Orders, email: str, *skus: str) -> list[str]:
    for sku in skus:
        assert (await orders.webhook(order_data(email, sku=sku))).status_code == 200
    rows = await fetch(
        orders.world,
        "SELECT k.license_key FROM orders.license_keys k JOIN orders.purchasers p ON p.id = k.purchaser_id"
        " WHERE p.email = $1",
        email,
    )
    return [r["license_key"] for r in rows]


async def recoveries(orders: Orders, email: str) -> list[dict]:
    requested = await outbox(orders.world, "notification.requested", email)
    return [e for e in requested if e["data"]["template"] == "license-recovery"]


async def ask(orders: Orders, email: str, ip: str | None = None) -> tuple[int, dict, float]:
    started_at = time.perf_counter()
    async with orders.client(ip) as client:
        response = await client.post("/v1/license-recovery", json={"email": email})
    return response.status_code, response.json(), time.perf_counter() - started_at


async def test_known_and_unknown_addresses_get_the_same_answer(orders: Orders) -> None:
    known, unknown = new_address("owner"), new_address("stranger")
    keys = await bought(orders, known, "SPM-DICT-PRO", "SPM-OCR")
    a_status, a_body, a_time = await ask(orders, known.upper())
    b_status, b_body, b_time = await ask(orders, unknown)
    assert (a_status, a_body) == (b_status, b_body) == (202, a_body)
    assert FLOOR <= a_time < FLOOR + 0.5 and FLOOR <= b_time < FLOOR + 0.5

    [mail] = await recoveries(orders, known)
    note = mail["data"]
    assert note["purpose"] == "license-recovery" and note["recipient"]["email"] == known
    products = note["context"]["products"]
    assert [set(p) for p in products] == [{"product_name", "download_url", "license_keys"}] * 2
    assert sorted(k for p in products for k in p["license_keys"]) == sorted(keys)
    assert await outbox(orders.world, "notification.requested", unknown) == []


async def test_an_address_is_sent_a_few_recoveries_at_most(orders: Orders) -> None:
    await clear_of_window_edges(Settings.model_fields["orders_recovery_window_seconds"].default)
    email = new_address()
    await bought(orders, email, "SPM-DICT-PRO")
    for _ in range(orders.settings.orders_recovery_per_email + 2):
        status, _, _ = await ask(orders, email)  # each from another client
        assert status == 202
    assert len(await recoveries(orders, email)) == orders.settings.orders_recovery_per_email


async def test_a_client_is_limited_and_the_limit_survives_a_restart(world: World, orders: Orders) -> None:
    await clear_of_window_edges(Settings.model_fields["orders_recovery_window_seconds"].default)
    ip = random_ip()
    for _ in range(orders.settings.orders_recovery_per_client):
        assert (await ask(orders, new_address(), ip))[0] == 202
    async with orders.client(ip) as client:
        response = await client.post("/v1/license-recovery", json={"email": new_address()})
    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= orders.settings.orders_recovery_window_seconds
    async with started(world, orders_recovery_min_seconds=0) as restarted:
        assert (await ask(restarted, new_address(), ip))[0] == 429
        assert (await ask(restarted, new_address(), random_ip()))[0] == 202
    rows = await fetch(world, "SELECT bucket FROM orders.rate_windows")
    assert all(ip not in r["bucket"] and "@" not in r["bucket"] for r in rows)


async def test_a_malformed_address_is_refused(orders: Orders) -> None:
    async with orders.client() as client:
        response = await client.post("/v1/license-recovery", json={"email": "no address here"})
    assert response.status_code == 422
    assert "no address here" not in response.text


async def test_behind_a_trusted_proxy_clients_are_limited_apart(world: World) -> None:
    await clear_of_window_edges(Settings.model_fields["orders_recovery_window_seconds"].default)
    proxy, one, two = random_ip(), random_ip(), random_ip()
    async with started(world, orders_recovery_min_seconds=0, trusted_proxies=proxy) as service:
        limit = service.settings.orders_recovery_per_client

        async def ask_as(forwarded_for: str) -> int:
            async with service.client(proxy) as client:
                response = await client.post(
                    "/v1/license-recovery", json={"email": new_address()}, headers={"X-Forwarded-For": forwarded_for}
                )
            return response.status_code

        assert [await ask_as(one) for _ in range(limit + 1)] == [202] * limit + [429]
        assert await ask_as(two) == 202
        # From a peer that is not a trusted proxy, the header is the client's own claim and is ignored.
        async with service.client(one) as direct_client:
            response = await direct_client.post(
                "/v1/license-recovery", json={"email": new_address()}, headers={"X-Forwarded-For": two}
            )
        assert response.status_code == 429
        # An IPv6 client is counted by its /64: it can pick any address inside it.
        prefix = f"2001:db8:{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}"
        assert [await ask_as(f"{prefix}::{i + 1:x}") for i in range(limit + 1)] == [202] * limit + [429]
        assert await ask_as(f"{prefix}:ffff::9") == 429
