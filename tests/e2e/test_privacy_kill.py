"""A privacy request survives a service killed while answering it: the four services run as processes, a person
asks for erasure through contact's API and confirms by the e-mailed link, orders is killed (SIGKILL) at once and
started again a little later; the request completes, with exactly one final e-mail."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import asyncpg
import httpx
from spm_common.testing.outside import publish
from spm_common.testing.smtp import Received, SmtpServer, free_port
from spm_common.testing.world import World

from .test_processes import spm_admin, wait_until_ready

T = TypeVar("T")
LINK = re.compile(r"https?://\S+/v1/privacy-requests/confirm\?token=(\S+)")
WAIT = 30.0
QUIET_SECONDS = 2.0


async def eventually(check: Callable[[], Awaitable[T | None]], what: str, timeout: float = WAIT) -> T:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.1)


def text_of(mail: Received) -> str:
    return str(mail.message.get_body(("plain",)).get_content())


def start(services: list[str], env: dict[str, str], output: Path) -> subprocess.Popen[bytes]:
    with output.open("ab") as sink:
        # A session of its own: SIGKILL to its group takes spm-admin and its children at once, as a crash would.
        return subprocess.Popen(
            [spm_admin(), "run", *services], env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )


def kill(process: subprocess.Popen[bytes], how: signal.Signals) -> None:
    if process.poll() is None:
        os.killpg(process.pid, how)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


async def test_a_service_killed_after_the_confirmation_answers_once_it_is_back(
    world: World, smtp: SmtpServer, tmp_path: Path
) -> None:
    ports = {service: free_port() for service in ("contact", "orders", "notifier", "audit")}
    env = {
        **os.environ,
        **world.env(
            SPM_LOG_FORMAT="json",
            SPM_HTTP_HOST="127.0.0.1",
            **{f"SPM_{service.upper()}_PORT": str(port) for service, port in ports.items()},
        ),
    }
    address = f"killed-{uuid.uuid4().hex[:8]}@example.com"
    # One after the other: each `spm-admin run` prepares the database's roles first, which two at once would race.
    others = start(["contact", "notifier", "audit"], env, tmp_path / "others.log")
    orders: subprocess.Popen[bytes] | None = None
    try:
        await wait_until_ready({s: p for s, p in ports.items() if s != "orders"}, others, tmp_path / "others.log")
        orders = start(["orders"], env, tmp_path / "orders.log")
        await wait_until_ready({"orders": ports["orders"]}, orders, tmp_path / "orders.log")

        # Data for the address in three services: an order (and its e-mail), a contact message (and its e-mail).
        await publish(
            world.exchange,
            "order.placed",
            {
                "order_id": f"FS-2026-{uuid.uuid4().hex[:10].upper()}",
                "placed_at": "2026-11-29T03:59:12Z",
                "currency": "USD",
                "total": "49.00",
                "purchaser": {"name": "Lê Văn Thử", "email": address, "locale": "en"},
                "items": [
                    {"sku": "SPM-DICT-PRO", "product_name": "SPM Dictionary Pro", "quantity": 1, "unit_price": "49.00"}
                ],
                "marketing_consent": False,
            },
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['contact']}", timeout=10) as contact:
            message = await contact.post(
                "/v1/messages", json={"name": "Lê Văn Thử", "email": address, "subject": "Hi", "message": "Hello"}
            )
            assert message.status_code == 202, message.text
            await smtp.wait_to(address, count=2, timeout=WAIT)

            request = await contact.post(
                "/v1/privacy-requests", json={"email": address, "kind": "erasure", "locale": "en"}
            )
            assert request.status_code == 202, request.text
            mails = await smtp.wait_to(address, count=3, timeout=WAIT)
            [token] = [m.group(1) for r in mails if (m := LINK.search(text_of(r)))]
            admin = await asyncpg.connect(world.database_url)
            try:
                request_id = await admin.fetchval("SELECT id FROM contact.privacy_requests WHERE email = $1", address)
                # Frozen first, so that the kill surely comes before its answer: the confirmed request reaches
                # orders (prefetched, unacknowledged) while it cannot act, and dies with it.
                assert orders is not None
                os.killpg(orders.pid, signal.SIGSTOP)
                confirmed = await contact.post(f"/v1/privacy-requests/confirm?token={token}")
                assert confirmed.status_code == 200, confirmed.text
                before = len(smtp.to(address))

                async def answered_by_the_others() -> bool:
                    return (
                        await admin.fetchval(
                            "SELECT count(*) FROM contact.privacy_answers WHERE request_id = $1", request_id
                        )
                        == 3
                    )

                await eventually(answered_by_the_others, "contact, notifier and audit answered")
                kill(orders, signal.SIGKILL)
                assert not await admin.fetchval(
                    "SELECT count(*) FROM orders.privacy_answered WHERE request_id = $1", request_id
                )
                await asyncio.sleep(2)
                orders = start(["orders"], env, tmp_path / "orders.log")
            finally:
                await admin.close()

            admin = await asyncpg.connect(world.database_url)
            try:

                async def completed() -> asyncpg.Record | None:
                    return await admin.fetchrow(
                        "SELECT 1 FROM contact.privacy_requests WHERE id = $1 AND status = 'completed'"
                        " AND final_mail = 'sent'"
                        " AND (SELECT count(*) FROM contact.privacy_answers WHERE request_id = $1) = 4",
                        request_id,
                    )

                await eventually(completed, "the request completed and its final e-mail sent")
                assert not await admin.fetchval("SELECT count(*) FROM orders.purchasers WHERE email = $1", address)
            finally:
                await admin.close()
            await asyncio.sleep(QUIET_SECONDS)
            after = smtp.to(address)[before:]
            assert len(after) == 1, [m.message["Subject"] for m in after]
            assert "erased" in after[0].message["Subject"].lower() or "data" in after[0].message["Subject"].lower()
    finally:
        if orders is not None:
            kill(orders, signal.SIGTERM)
        kill(others, signal.SIGTERM)
