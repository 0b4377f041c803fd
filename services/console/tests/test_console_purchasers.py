"""The purchaser page: consent to news and unsubscribes as the orders service keeps them, and resending the
license keys by e-mail (CSRF-protected, once per form, the operator recorded, an audited action filed under
the purchaser), against the real orders service, notifier, audit service and SMTP server."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import httpx
from console_helpers import System, csrf_of, eventually, logged_in
from notifier import tokens
from notifier.settings import Settings as NotifierSettings
from orders.privacy_answer import ERASE
from spm_common.testing.smtp import SmtpServer
from spm_common.testing.world import OPERATOR_TOKEN

REQUEST_ID_RE = re.compile(r'name="request_id" value="([^"]+)"')
RECOVERY_SUBJECT = "Mã giấy phép và liên kết tải về của bạn"


def request_id_of(html: str) -> str:
    match = REQUEST_ID_RE.search(html)
    assert match, "no resend form in the page"
    return match.group(1)


async def resent_by_orders(system: System, email: str) -> list[str]:
    """The operators recorded by the orders service for this purchaser's key resends."""
    conn = await system.world.admin()
    try:
        rows = await conn.fetch(
            "SELECT r.operator FROM orders.key_resends r JOIN orders.purchasers p ON p.id = r.purchaser_id"
            " WHERE p.email = $1 ORDER BY r.id",
            email,
        )
    finally:
        await conn.close()
    return [row["operator"] for row in rows]


async def trail_of(system: System, email: str) -> list[dict[str, Any]]:
    """The operator.action entries the audit trail files under this person."""
    async with httpx.AsyncClient(
        base_url=system.audit_url, headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    ) as client:
        response = await client.get("/v1/audit/events", params={"type": "operator.action", "email": email})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_a_support_operator_resends_the_keys_once_and_the_purchaser_gets_them(
    system: System, smtp: SmtpServer
) -> None:
    buyer = f"mua-{uuid.uuid4().hex[:8]}@example.vn"
    shop_id = await system.place_order(buyer, consent=True)
    [key] = await system.license_keys(shop_id)
    await smtp.wait_to(buyer, count=1, timeout=20)  # the order confirmation
    support = await system.operator("support")
    target = f"orders.purchaser:{buyer}"
    async with logged_in(system, support) as client:
        page = await client.get("/purchasers", params={"email": buyer})
        assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
        assert "Đã đồng ý" in page.text and f"theo đơn {shop_id}" in page.text
        assert page.text.count("Chưa huỷ") == 2  # neither news nor upgrade notices
        assert key not in page.text

        form = {"csrf_token": "forged", "email": buyer, "request_id": request_id_of(page.text)}
        forged = await client.post("/purchasers/resend-keys", data=form)
        assert forged.status_code == 403
        form["csrf_token"] = csrf_of(page.text)
        sent = await client.post("/purchasers/resend-keys", data=form)
        assert sent.status_code == 303 and "notice=keys_resent" in sent.headers["location"]
        shown = await client.get(sent.headers["location"])
        assert f"Đã gửi lại khoá bản quyền đến {buyer}." in shown.text
        assert support in shown.text  # the resend, with who asked for it
        again = await client.post("/purchasers/resend-keys", data=form)  # the same form, a second click
        assert again.status_code == 303 and "notice=keys_resent_before" in again.headers["location"]

    [_, recovered] = await smtp.wait_to(buyer, count=2, timeout=20)
    assert recovered.message["Subject"] == RECOVERY_SUBJECT
    assert key in recovered.message.get_body(("plain",)).get_content()
    assert await resent_by_orders(system, buyer) == [support]
    await asyncio.sleep(1)
    assert len(smtp.to(buyer)) == 2  # neither the forged nor the repeated form sent anything

    actions = [(a["action"], a["target"]) for a in await system.actions(support)][1:]
    assert actions == [
        ("purchaser.viewed", target),
        ("license_keys.resent", target),
        ("purchaser.viewed", target),
        ("license_keys.resent", target),
    ]

    async def filed() -> list[dict[str, Any]] | None:
        entries = [e for e in await trail_of(system, buyer) if e["data"]["action"] == "license_keys.resent"]
        return entries if len(entries) == 2 else None

    for entry in await eventually(filed, what="the resends in the audit trail, under the purchaser"):
        assert buyer not in str(entry["data"]) and support not in str(entry["data"])


async def test_a_fourth_resend_within_the_hour_is_refused_on_the_page(system: System, smtp: SmtpServer) -> None:
    buyer = f"nhieu-{uuid.uuid4().hex[:8]}@example.vn"
    await system.place_order(buyer)
    support = await system.operator("support")
    async with logged_in(system, support) as client:
        client.cookies.set("spm_console_lang", "en")
        for _ in range(3):
            page = await client.get("/purchasers", params={"email": buyer})
            form = {"csrf_token": csrf_of(page.text), "email": buyer, "request_id": request_id_of(page.text)}
            assert (await client.post("/purchasers/resend-keys", data=form)).status_code == 303
        page = await client.get("/purchasers", params={"email": buyer})
        form = {"csrf_token": csrf_of(page.text), "email": buyer, "request_id": request_id_of(page.text)}
        refused = await client.post("/purchasers/resend-keys", data=form)
    assert refused.status_code == 429
    assert "Nothing was sent: this purchaser&#39;s keys were resent several times recently." in refused.text
    assert await resent_by_orders(system, buyer) == [support] * 3


async def test_the_page_shows_an_unsubscribe_made_at_the_notifier(system: System) -> None:
    buyer = f"huy-{uuid.uuid4().hex[:8]}@example.vn"
    await system.place_order(buyer, consent=True)
    key = system.world.settings(NotifierSettings).recipient_key()
    async with httpx.AsyncClient(base_url=system.notifier_url) as notifier:
        # The one-click unsubscribe of a news e-mail's link (RFC 8058), as the purchaser's mail client sends it.
        response = await notifier.post("/v1/unsubscribe", params={"token": tokens.make_token(buyer, "news", key)})
        assert response.status_code < 300, response.text
    support = await system.operator("support")
    async with logged_in(system, support) as client:
        client.cookies.set("spm_console_lang", "en")

        async def withdrawn() -> str | None:
            page = await client.get("/purchasers", params={"email": buyer})
            return page.text if "Withdrawn" in page.text else None

        text = await eventually(withdrawn, what="the withdrawal on the purchaser page")
        assert "Unsubscribed from news" in text and text.count("Unsubscribed <time") == 1
        assert "Unsubscribed from upgrade notices" in text and "Not unsubscribed" in text

        unknown = await client.get("/purchasers", params={"email": f"no-{uuid.uuid4().hex[:6]}@example.vn"})
        assert unknown.status_code == 404 and "No purchaser with this address." in unknown.text
        bad = await client.get("/purchasers", params={"email": "not@an address"})
        assert bad.status_code == 422
        page = await client.get("/purchasers", params={"email": buyer})
        stale = await client.post(
            "/purchasers/resend-keys", data={"csrf_token": csrf_of(page.text), "email": buyer, "request_id": "x"}
        )
        assert stale.status_code == 422
    assert await resent_by_orders(system, buyer) == []


async def test_resending_needs_a_login(system: System) -> None:
    async with httpx.AsyncClient(base_url=system.console_url) as anonymous:
        response = await anonymous.post(
            "/purchasers/resend-keys", data={"email": "x@example.vn", "request_id": str(uuid.uuid4())}
        )
        assert response.status_code == 401
        assert (await anonymous.get("/purchasers", params={"email": "x@example.vn"})).status_code == 303


async def test_an_erased_purchasers_order_still_shows(system: System) -> None:
    buyer = f"xoa-{uuid.uuid4().hex[:8]}@example.vn"
    shop_id = await system.place_order(buyer)
    conn = await system.world.admin()
    try:
        await conn.execute("SET search_path TO orders")
        await conn.execute(ERASE, [buyer])  # as a confirmed erasure request does it
    finally:
        await conn.close()
    async with logged_in(system, await system.operator()) as client:
        found = await client.get("/orders", params={"q": shop_id})
        assert found.status_code == 200 and "Dữ liệu người mua đã bị xoá theo yêu cầu của họ." in found.text
        order_path = found.text.split('href="/orders/')[1].split('"')[0]
        order = await client.get(f"/orders/{order_path}")
        assert order.status_code == 200 and shop_id in order.text and "/purchasers?" not in order.text
        assert (await client.get("/purchasers", params={"email": buyer})).status_code == 404
