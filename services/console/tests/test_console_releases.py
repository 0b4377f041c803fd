"""Releases and news in a real browser: an admin adds a product, runs a dry run, sends a test to their own
address, then sends the upgrade to 3 purchasers and watches the self-refreshing progress bar reach 100 %
(3 e-mails at the SMTP server); a support account is refused the page."""

from __future__ import annotations

import time
import uuid

import httpx
import orjson
from console_helpers import System, eventually, logged_in
from orders import webhooks
from playwright.async_api import Page
from spm_common.testing.smtp import SmtpServer
from spm_common.testing.world import WEBHOOK_SECRET
from test_console_browser import browser, labelled, log_in_by_keyboard, page, shot

__all__ = ["browser", "page"]  # the browser fixtures, shared with the other browser tests


async def place_order(system: System, email: str, sku: str) -> None:
    body = orjson.dumps(
        {
            "order_id": f"FS-2026-{uuid.uuid4().hex[:10].upper()}",
            "placed_at": "2026-11-29T03:59:12Z",
            "currency": "USD",
            "total": "49.00",
            "purchaser": {"name": "Lê Thị Mua", "email": email, "locale": "vi"},
            "items": [{"sku": sku, "product_name": "Test", "quantity": 1, "unit_price": "49.00"}],
        }
    )
    signature = webhooks.header(WEBHOOK_SECRET, int(time.time()), body)
    async with httpx.AsyncClient(base_url=system.orders_url) as client:
        response = await client.post(
            "/v1/webhooks/orders",
            content=body,
            headers={"X-SPM-Signature": signature, "Content-Type": "application/json"},
        )
    assert response.status_code < 300, response.text


async def test_an_admin_sends_an_upgrade_to_three_purchasers(system: System, page: Page, smtp: SmtpServer) -> None:
    tag = uuid.uuid4().hex[:6].upper()
    sku = f"T-REL-{tag}"
    buyers = [f"nang-cap-{tag.lower()}-{i}@example.vn" for i in range(3)]
    admin = await system.operator("admin")
    await log_in_by_keyboard(page, system, admin)
    await page.get_by_role("link", name="Phát hành và tin tức").click()
    await labelled(page)

    await page.get_by_label("SKU", exact=True).fill(sku)
    await page.get_by_label("Tên tiếng Việt", exact=True).fill(f"Từ điển {tag}")
    await page.get_by_label("Tên tiếng Anh", exact=True).fill(f"Dictionary {tag}")
    await page.locator("#p-url").fill("https://spmgroup.vn/dl/dict.exe")
    await page.get_by_label("Phiên bản chính", exact=True).fill("5")
    await page.get_by_role("button", name="Lưu sản phẩm").click()
    await page.get_by_text("Đã lưu sản phẩm.").wait_for()
    await page.get_by_role("cell", name=f"Từ điển {tag}").wait_for()
    for buyer in buyers:  # the shop sells the new product
        await place_order(system, buyer, sku)
    for buyer in buyers:
        await smtp.wait_to(buyer, count=1, timeout=30)  # the order's own e-mail

    release_id = f"{sku}-5.2.0"
    await page.get_by_label("Mã phát hành (duy nhất)", exact=True).fill(release_id)
    await page.get_by_label("Sản phẩm", exact=True).select_option(sku)
    await page.get_by_label("Phiên bản", exact=True).fill("5.2.0")
    await page.locator("#u-title").fill(f"Từ điển {tag} 5.2")
    await page.locator("#u-download").fill("https://spmgroup.vn/dl/dict-5.2.exe")
    await page.get_by_role("button", name="Chạy thử (đếm người nhận, không gửi)").first.click()
    await page.get_by_text("Sẽ gửi tới 3 người mua.").wait_for()
    await labelled(page)
    await shot(page, "20-releases-dry-run")
    assert all(len(smtp.to(buyer)) == 1 for buyer in buyers)  # a dry run sends nothing

    await page.get_by_role("button", name=f"Gửi thử tới {admin}").click()
    await page.get_by_text("Đã gửi thư thử tới địa chỉ của bạn.").wait_for()
    [test] = await smtp.wait_to(admin, count=1, timeout=30)
    assert "5.2.0" in test.message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert all(len(smtp.to(buyer)) == 1 for buyer in buyers)

    await page.get_by_text("Sẽ gửi tới 3 người mua.").wait_for()
    await page.get_by_role("button", name="Xác nhận: gửi tới 3 người mua").click()
    await page.wait_for_url("**/releases/fanouts/*")
    await labelled(page)
    progress = page.locator("progress#fanout-progress")
    await progress.wait_for()
    # The page refreshes itself while the send runs; no script is involved.
    await page.get_by_text("Hoàn tất").wait_for(timeout=60_000)
    assert await page.locator("#fanout-percent").inner_text() == "100 %"
    assert await progress.get_attribute("value") == "3" and await progress.get_attribute("max") == "3"
    assert await page.locator("#fanout-sent").inner_text() == "3 / 3"
    await shot(page, "21-releases-finished")
    for buyer in buyers:
        mails = await smtp.wait_to(buyer, count=2, timeout=60)
        assert "5.2.0" in mails[-1].message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    actions = [a["action"] for a in await system.actions(admin)]
    assert [a for a in actions if a.startswith(("product.", "fanout."))] == [
        "product.saved",
        "fanout.dry_run",
        "fanout.test_sent",
        "fanout.started",
    ]


async def test_a_support_account_is_refused_the_releases_page(system: System, page: Page) -> None:
    await log_in_by_keyboard(page, system, await system.operator("support"))
    assert await page.get_by_role("link", name="Phát hành và tin tức").count() == 0
    response = await page.goto(f"{system.console_url}/releases")
    assert response is not None and response.status == 403
    await shot(page, "22-releases-forbidden")


async def test_a_fanout_is_paused_and_cancelled_from_the_console(system: System) -> None:
    admin = await system.operator("admin")
    async with logged_in(system, admin) as client:
        page = await client.get("/releases")
        assert page.status_code == 200
        csrf = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        news = {
            "csrf_token": csrf,
            "kind": "news",
            "announcement_id": f"news-{uuid.uuid4().hex[:8]}",
            "title": "Tin mới",
            "summary": "Sản phẩm mới",
            "url": "https://spmgroup.vn/tin",
            "action": "start",
        }
        assert (await client.post("/releases/publish", data={**news, "csrf_token": "forged"})).status_code == 403
        started = await client.post("/releases/publish", data=news)
        assert started.status_code == 303, started.text
        fanout_url = started.headers["location"]
        again = await client.post("/releases/publish", data=news)
        assert again.status_code == 409 and "Mã này đã được gửi trước đây." in again.text
        cancelled = await client.post(f"{fanout_url}/cancel", data={"csrf_token": csrf})
        assert cancelled.status_code == 303
        shown = await client.get(fanout_url)

        async def ended() -> bool:
            text = (await client.get(fanout_url)).text
            return "Đã huỷ" in text or "Hoàn tất" in text

        await eventually(ended, what="ended")
        assert shown.status_code == 200 and 'http-equiv="refresh"' not in (await client.get(fanout_url)).text
