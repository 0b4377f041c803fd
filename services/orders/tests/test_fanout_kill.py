"""A fan-out killed halfway (SIGKILL of the real process) resumes in a new process: no one skipped, no one
notified twice. No other orders app runs during this module, so the resuming process is the only worker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter

import httpx
from orders_helpers import (
    add_product,
    admin,
    eventually,
    fanout_done,
    fetch,
    publish,
    release,
    requests_for,
    seed_purchasers,
)
from spm_common.testing.smtp import free_port
from spm_common.testing.world import World


async def wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            assert process.poll() is None, "the service exited"
            try:
                if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise TimeoutError("service not ready")


def spawn(world: World, exchange: str, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **world.env(SPM_EXCHANGE=exchange, SPM_ORDERS_PORT=str(port), SPM_ORDERS_FANOUT_BATCH="25"),
        "SPM_LOG_LEVEL": "warning",
    }
    return subprocess.Popen([sys.executable, "-m", "orders"], env=env, stdout=subprocess.DEVNULL)


async def test_a_fanout_killed_halfway_resumes_with_no_one_skipped_and_no_one_twice(world: World) -> None:
    exchange = f"{world.exchange}.kill{uuid.uuid4().hex[:6]}"
    world.exchanges.add(exchange)
    port = free_port()
    first = spawn(world, exchange, port)
    try:
        await wait_ready(port, first)  # it has migrated the schema
        sku = await add_product(world)
        seeded = await seed_purchasers(world, sku, 2000)
        data = release(sku, new_registration=True)
        reference = f"release:{data['release_id']}"
        await publish(exchange, "upgrade.released", data)
        for _ in range(2000):
            rows = await fetch(
                world, "SELECT cursor, finished_at FROM orders.fanouts WHERE key = $1", data["release_id"]
            )
            if rows and rows[0]["cursor"] > 0:
                break
            await asyncio.sleep(0.005)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    async with admin(world) as conn, conn.transaction(isolation="repeatable_read"):
        # One snapshot: the batch in flight at the kill may still commit while we look.
        job = await conn.fetchrow("SELECT * FROM orders.fanouts WHERE key = $1", data["release_id"])
        enqueued = await conn.fetchval(
            "SELECT count(*) FROM orders.outbox WHERE position($1::bytea IN body) > 0", reference.encode()
        )
    assert job["finished_at"] is None and 0 < job["notified"] < 2000, "not killed halfway"
    assert enqueued == job["notified"]

    second = spawn(world, exchange, free_port())
    try:
        await eventually(lambda: fanout_done(world, data["release_id"]), timeout=60, what="resumed fan-out")
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(20)
    sent = Counter(r["data"]["recipient"]["email"] for r in await requests_for(world, reference))
    assert len(sent) == 2000 and set(sent.values()) == {1}
    ids = [r["id"] for r in await requests_for(world, reference)]
    assert len(set(ids)) == 2000
    keys = await fetch(world, "SELECT purchaser_id FROM orders.license_keys WHERE release_id = $1", data["release_id"])
    assert sorted(k["purchaser_id"] for k in keys) == seeded
