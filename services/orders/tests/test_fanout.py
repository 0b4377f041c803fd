"""Free upgrades and news: who receives them, once each, a fan-out killed halfway and resumed, replays."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from orders import fanout
from orders_helpers import (
    Orders,
    add_product,
    eventually,
    fanout_done,
    fetch,
    new_address,
    order_data,
    release,
    requests_for,
    seed_purchasers,
    started,
)
from spm_common.testing.world import World


@pytest.fixture(scope="module")
async def orders(world: World) -> AsyncIterator[Orders]:
    async with started(world, orders_fanout_batch=40) as service:
        yield service


async def place(orders: Orders, email: str, sku: str, placed_at: str, consent: bool = False) -> None:
    data = order_data(email, sku=sku, placed_at=placed_at, consent=consent)
    assert (await orders.webhook(data)).status_code == 200


async def unsubscribe(orders: Orders, email: str, category: str) -> None:
    event_id = await orders.publish(
        "notification.unsubscribed", {"email": email, "category": category}, source="urn:spm:notifier"
    )
    await eventually(
        lambda: fetch(orders.world, "SELECT 1 FROM orders.inbox WHERE event_id = $1", event_id), what="consumed"
    )


def recipients(requests: list[dict[str, Any]]) -> Counter[str]:
    return Counter(r["data"]["recipient"]["email"] for r in requests)


async def test_an_upgrade_reaches_each_eligible_purchaser_once(orders: Orders) -> None:
    sku = await add_product(orders.world, major=2)
    old, recent, left, other = (new_address(tag) for tag in ("old", "recent", "left", "other"))
    await place(orders, old, sku, "2025-01-01T00:00:00Z")
    await place(orders, recent, sku, "2026-06-01T00:00:00Z")
    await place(orders, recent, sku, "2026-07-01T00:00:00Z")  # two orders, still one e-mail
    await place(orders, left, sku, "2026-06-01T00:00:00Z")
    await place(orders, other, "SPM-OCR", "2026-06-01T00:00:00Z")
    await unsubscribe(orders, left, "upgrades")

    data = release(sku, eligible_since="2026-01-01T00:00:00Z", new_registration=True, version="3.0.1")
    await orders.publish("upgrade.released", data)
    done = await eventually(lambda: fanout_done(orders.world, data["release_id"]), what="fan-out finished")
    assert done["notified"] == 1

    [notice] = await requests_for(orders.world, f"release:{data['release_id']}")
    note = notice["data"]
    assert (note["purpose"], note["template"], note["recipient"]["email"]) == ("free-upgrade", "upgrade-notice", recent)
    assert set(note["context"]) == {"product_name", "title", "version", "notes_url", "download_url", "license_key"}
    assert note["context"]["product_name"] == f"Sản phẩm thử {sku}" and note["context"]["version"] == "3.0.1"
    [key] = await fetch(orders.world, "SELECT * FROM orders.license_keys WHERE release_id = $1", data["release_id"])
    assert note["context"]["license_key"] == key["license_key"] and key["major_version"] == 3

    # The same release again (a new event id) sends nothing.
    await orders.publish("upgrade.released", data)
    await orders.publish("upgrade.released", {**data, "title": "changed"})
    sentinel = release(sku)
    await orders.publish("upgrade.released", sentinel)
    await eventually(lambda: fanout_done(orders.world, sentinel["release_id"]), what="sentinel fan-out")
    assert len(await requests_for(orders.world, f"release:{data['release_id']}")) == 1
    notices = await requests_for(orders.world, f"release:{sentinel['release_id']}")
    assert recipients(notices) == {old: 1, recent: 1}  # no eligible_since: every purchaser who stayed
    assert [n["data"]["context"]["license_key"] for n in notices] == [None, None]  # no new registration


async def test_news_reaches_only_those_who_consented_and_stayed(orders: Orders) -> None:
    yes, no, gone, late = (new_address(tag) for tag in ("yes", "no", "gone", "late"))
    await place(orders, yes, "SPM-TYPE", "2026-06-01T00:00:00Z", consent=True)
    await place(orders, no, "SPM-TYPE", "2026-06-01T00:00:00Z", consent=False)
    await place(orders, gone, "SPM-TYPE", "2026-06-01T00:00:00Z", consent=True)
    await place(orders, late, "SPM-TYPE", "2026-06-01T00:00:00Z", consent=True)
    await unsubscribe(orders, gone, "news")
    await unsubscribe(orders, late, "news")
    # An order placed before the unsubscription, arriving after it, does not bring consent back.
    await place(orders, late, "SPM-OCR", "2026-06-02T00:00:00Z", consent=True)

    announcement = {
        "announcement_id": f"news-{uuid.uuid4().hex[:6]}",
        "title": "SPM OCR 4",
        "summary": "Nhận dạng chữ nhanh hơn.",
        "url": "https://spmgroup.vn/new",
    }
    await orders.publish("product.announced", announcement)
    await eventually(lambda: fanout_done(orders.world, announcement["announcement_id"]), what="news fan-out")
    sent = recipients(await requests_for(orders.world, f"announcement:{announcement['announcement_id']}"))
    assert sent[yes] == 1 and no not in sent and gone not in sent and late not in sent
    assert all(count == 1 for count in sent.values())
    [note] = [r for r in await requests_for(orders.world, yes) if r["data"]["template"] == "product-news"]
    assert note["data"]["purpose"] == "product-news"
    assert note["data"]["context"] == {
        "title": "SPM OCR 4",
        "summary": "Nhận dạng chữ nhanh hơn.",
        "url": "https://spmgroup.vn/new",
    }


async def test_a_crash_in_a_batch_rolls_it_back_and_the_fanout_resumes(
    orders: Orders, monkeypatch: pytest.MonkeyPatch
) -> None:
    sku = await add_product(orders.world)
    seeded = await seed_purchasers(orders.world, sku, 150)  # batches of 40: 40, 40, 40, 30
    real_advance = fanout.store.advance_fanout
    calls = 0
    crashed, resume = asyncio.Event(), asyncio.Event()

    async def crashing(conn: Any, *args: Any) -> None:
        # The batch's keys are issued; its requests are about to be enqueued with the cursor's move.
        nonlocal calls
        calls += 1
        if calls == 3:
            crashed.set()
            raise RuntimeError("simulated crash in the middle of a batch")
        if calls > 3:
            await resume.wait()
        await real_advance(conn, *args)

    monkeypatch.setattr(fanout.store, "advance_fanout", crashing)
    data = release(sku, new_registration=True)
    await orders.publish("upgrade.released", data)
    await asyncio.wait_for(crashed.wait(), 10)
    await asyncio.sleep(0.2)
    [job] = await fetch(orders.world, "SELECT * FROM orders.fanouts WHERE key = $1", data["release_id"])
    assert (job["cursor"], job["notified"], job["finished_at"]) == (seeded[79], 80, None)
    assert len(await requests_for(orders.world, f"release:{data['release_id']}")) == 80
    keys = await fetch(orders.world, "SELECT 1 FROM orders.license_keys WHERE release_id = $1", data["release_id"])
    assert len(keys) == 80  # the crashed batch's keys were rolled back with it

    resume.set()
    await eventually(lambda: fanout_done(orders.world, data["release_id"]), timeout=15, what="resumed")
    sent = recipients(await requests_for(orders.world, f"release:{data['release_id']}"))
    assert len(sent) == 150 and set(sent.values()) == {1}
    keys = await fetch(
        orders.world, "SELECT purchaser_id FROM orders.license_keys WHERE release_id = $1", data["release_id"]
    )
    assert sorted(k["purchaser_id"] for k in keys) == seeded
