"""The operators' release desk: the catalogue, a dry run that counts, a test send to one address, a fan-out
started by an operator (who is recorded), its progress, pause, resume and cancel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from orders_helpers import Orders, add_product, eventually, fanout_done, release, requests_for, seed_purchasers, started
from spm_common.testing.world import World

OPERATOR = {"X-SPM-Operator": "admin@spmgroup.vn"}


@pytest.fixture(scope="module")
async def orders(world: World) -> AsyncIterator[Orders]:
    async with started(world, orders_fanout_batch=2) as service:
        yield service


async def test_the_catalogue_is_listed_added_and_changed(orders: Orders) -> None:
    async with orders.client(operator=True) as operator:
        change = {
            "name_en": "Dictionary Pro",
            "name_vi": "Từ điển Pro",
            "download_url": "https://spmgroup.vn/dl/dict.exe",
            "major_version": 5,
        }
        added = await operator.put("/v1/products/T-DESK-DICT", json=change)
        assert added.status_code == 200, added.text
        changed = await operator.put("/v1/products/T-DESK-DICT", json={**change, "major_version": 6})
        assert changed.json()["major_version"] == 6
        listed = {p["sku"]: p for p in (await operator.get("/v1/products")).json()}
        assert listed["T-DESK-DICT"]["major_version"] == 6 and listed["T-DESK-DICT"]["name_vi"] == "Từ điển Pro"
        bad = await operator.put("/v1/products/T-DESK-DICT", json={**change, "download_url": "ftp://x"})
        assert bad.status_code == 422
    async with orders.client() as anonymous:
        assert (await anonymous.get("/v1/products")).status_code == 401


async def test_dry_run_test_send_then_the_real_fanout(orders: Orders) -> None:
    sku = await add_product(orders.world, major=2)
    await seed_purchasers(orders.world, sku, 3)
    upgrade = release(sku)
    async with orders.client(operator=True) as operator:
        dry = await operator.post("/v1/fanouts/dry-run", json={"upgrade": upgrade})
        assert dry.json()["recipients"] == 3
        assert not await requests_for(orders.world, f"release:{upgrade['release_id']}")

        sent = await operator.post("/v1/fanouts/test", json={"upgrade": upgrade, "to": "admin@spmgroup.vn"})
        assert sent.status_code == 202
        [test] = await requests_for(orders.world, f"test:release:{upgrade['release_id']}")
        assert test["data"]["recipient"]["email"] == "admin@spmgroup.vn"
        assert test["data"]["context"]["version"] == "2.1.0"

        both = await operator.post("/v1/fanouts/dry-run", json={"upgrade": upgrade, "news": None})
        assert (await operator.post("/v1/fanouts/dry-run", json={})).status_code == 422 and both.status_code == 200

        started_ = await operator.post("/v1/fanouts", json={"upgrade": upgrade}, headers=OPERATOR)
        assert started_.status_code == 201, started_.text
        view = started_.json()
        assert view["total"] == 3 and view["started_by"] == "admin@spmgroup.vn" and view["kind"] == "upgrade"
        await eventually(lambda: fanout_done(orders.world, upgrade["release_id"]), what="fan-out finished")
        done = (await operator.get(f"/v1/fanouts/{view['id']}")).json()
        assert done["state"] == "finished" and done["notified"] == 3
        assert (
            len(await requests_for(orders.world, f"release:{upgrade['release_id']}")) == 3
        )  # the test send is not one of them
        again = await operator.post("/v1/fanouts", json={"upgrade": upgrade}, headers=OPERATOR)
        assert again.status_code == 409
        assert (await operator.get("/v1/fanouts/999999999")).status_code == 404


async def test_pause_holds_resume_finishes_cancel_stops(orders: Orders) -> None:
    sku = await add_product(orders.world)
    await seed_purchasers(orders.world, sku, 400)
    async with orders.client(operator=True) as operator:
        view = (await operator.post("/v1/fanouts", json={"upgrade": release(sku)}, headers=OPERATOR)).json()
        paused = await operator.post(f"/v1/fanouts/{view['id']}/pause")
        assert paused.json()["state"] == "paused"
        held = paused.json()["notified"]
        await asyncio.sleep(1.0)
        still = (await operator.get(f"/v1/fanouts/{view['id']}")).json()
        assert still["notified"] == held < 400 and still["state"] == "paused"

        resumed = await operator.post(f"/v1/fanouts/{view['id']}/resume")
        assert resumed.json()["state"] == "running"

        async def moved() -> bool | None:
            got = (await operator.get(f"/v1/fanouts/{view['id']}")).json()
            return True if got["notified"] > held else None

        await eventually(moved, what="sending again")
        cancelled = await operator.post(f"/v1/fanouts/{view['id']}/cancel")
        assert cancelled.json()["state"] == "cancelled"
        stopped = cancelled.json()["notified"]
        await asyncio.sleep(1.0)
        final = (await operator.get(f"/v1/fanouts/{view['id']}")).json()
        assert final["notified"] == stopped < 400
        assert (await operator.post(f"/v1/fanouts/{view['id']}/resume")).status_code == 404
