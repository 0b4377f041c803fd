"""Purchasers retention: one with no order and no other activity for SPM_ORDERS_PURCHASER_RETENTION_YEARS is
anonymised as an erasure does it, the orders kept; the audit trail learns how many, never who."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
from orders import recovery, retention
from orders_helpers import Orders, admin, eventually, fetch, new_address, order_data, outbox


async def _placed(orders: Orders, email: str) -> None:
    await orders.publish("order.placed", order_data(email))

    async def recorded() -> bool:
        rows = await fetch(
            orders.world,
            "SELECT 1 FROM orders.orders o JOIN orders.purchasers p ON p.id = o.purchaser_id WHERE p.email = $1",
            email,
        )
        return bool(rows)

    await eventually(recorded, what="order recorded")


async def test_purchasers_inactive_for_the_retention_are_anonymised_and_counted(orders: Orders) -> None:
    gone, recent, active_lately = new_address("gone"), new_address("recent"), new_address("unsubscribed")
    recovered = new_address("recovered")
    for email in (gone, recent, active_lately, recovered):
        await _placed(orders, email)
    key = orders.settings.hash_key()
    async with admin(orders.world) as conn:
        # `gone` last ordered six years ago and did nothing since; `active_lately` ordered as long ago but its
        # row changed last month (an unsubscribe), so it is not inactive yet.
        await conn.execute(
            "UPDATE orders.purchasers SET last_order_at = now() - interval '6 years',"
            " updated_at = now() - interval '6 years' WHERE email = $1",
            gone,
        )
        await conn.execute(
            "UPDATE orders.purchasers SET last_order_at = now() - interval '6 years',"
            " updated_at = now() - interval '1 month' WHERE email = $1",
            active_lately,
        )
        await conn.execute(
            "UPDATE orders.purchasers SET last_order_at = now() - interval '6 years',"
            " updated_at = now() - interval '6 years' WHERE email = $1",
            recovered,
        )
        await conn.execute(
            "INSERT INTO orders.rate_windows (bucket, window_start, hits, expires_at)"
            " VALUES ($1, now(), 1, now() + interval '1 hour')",
            recovery.email_bucket(gone, key) + "/3600",
        )
    # `recovered` asked for its license keys today: a request, so it is active again.
    async with orders.client() as client:
        assert (await client.post("/v1/license-recovery", json={"email": recovered})).status_code == 202
    [before] = await fetch(orders.world, "SELECT id FROM orders.purchasers WHERE email = $1", gone)

    pool = await asyncpg.create_pool(
        orders.settings.role_database_url(), min_size=1, max_size=2, server_settings={"search_path": "orders"}
    )
    try:
        count = await retention.anonymise_inactive(pool, 5, hash_key=key, source=orders.settings.source)
    finally:
        await pool.close()
    assert count >= 1

    [row] = await fetch(orders.world, "SELECT * FROM orders.purchasers WHERE id = $1", before["id"])
    assert row["email"] is None and row["name"] is None and row["phone"] is None and row["address"] is None
    assert row["erased_at"] is not None and row["news_unsubscribed_at"] is not None
    assert await fetch(orders.world, "SELECT 1 FROM orders.orders WHERE purchaser_id = $1", before["id"])  # kept
    assert not await fetch(
        orders.world,
        "SELECT 1 FROM orders.rate_windows WHERE bucket LIKE $1 || '/%'",
        recovery.email_bucket(gone, key),
    )
    assert not await fetch(orders.world, "SELECT 1 FROM orders.purchases WHERE purchaser_id = $1", before["id"])
    for email in (recent, active_lately, recovered):
        assert await fetch(orders.world, "SELECT 1 FROM orders.purchasers WHERE email = $1", email), email

    reports = [e["data"] for e in await outbox(orders.world, "retention.purged") if e["data"]["what"] == "purchasers"]
    assert sum(r["count"] for r in reports) >= 1
    for report in reports:
        assert set(report) == {"service", "what", "count", "older_than"}
        assert report["service"] == "orders"
    latest = datetime.fromisoformat(reports[-1]["older_than"])
    assert latest.year == datetime.now(UTC).year - 5
    everything = str(await outbox(orders.world, "retention.purged"))
    assert gone not in everything
