"""The purchaser page in a real browser (Debian's Chromium through Playwright) against the real orders service,
notifier and SMTP server: a support operator finds a buyer, sees their consent to news and that they have not
unsubscribed, resends their license keys, and the buyer receives the e-mail with the key."""

from __future__ import annotations

import uuid

from console_helpers import System
from playwright.async_api import Page
from spm_common.testing.smtp import SmtpServer
from test_console_browser import browser, labelled, log_in_by_keyboard, page, shot

__all__ = ["browser", "page"]  # fixtures, shared with the other browser tests


async def test_a_support_operator_resends_a_buyers_keys_from_the_purchaser_page(
    system: System, page: Page, smtp: SmtpServer
) -> None:
    buyer = f"mua-{uuid.uuid4().hex[:8]}@example.vn"
    shop_id = await system.place_order(buyer, consent=True)
    [key] = await system.license_keys(shop_id)
    await smtp.wait_to(buyer, count=1, timeout=20)  # the order confirmation
    await log_in_by_keyboard(page, system, await system.operator("support"))

    await page.get_by_role("link", name="Đơn hàng").click()
    await page.get_by_label("Địa chỉ e-mail của người mua hoặc mã đơn hàng").fill(buyer)
    await page.keyboard.press("Enter")
    await page.get_by_role("link", name="Lê Thị Mua").click()
    await page.get_by_role("heading", name="Người mua Lê Thị Mua").wait_for()
    await labelled(page)
    consent = page.get_by_role("region", name="Đồng ý nhận tin và huỷ đăng ký")
    assert "Đã đồng ý" in await consent.inner_text() and shop_id in await consent.inner_text()
    assert (await consent.inner_text()).count("Chưa huỷ") == 2
    assert await page.get_by_text(key).count() == 0
    await shot(page, "15-purchaser")

    await page.get_by_role("button", name="Gửi lại khoá bản quyền qua e-mail").click()
    await page.get_by_role("status").filter(has_text=f"Đã gửi lại khoá bản quyền đến {buyer}.").wait_for()
    await labelled(page)
    await shot(page, "16-keys-resent")

    [_, resent] = await smtp.wait_to(buyer, count=2, timeout=20)
    assert resent.rcpt_tos == [buyer]
    assert key in resent.message.get_body(("plain",)).get_content()

    # The same page in English.
    await page.get_by_label("Ngôn ngữ").select_option("en")
    await page.get_by_role("button", name="Đổi ngôn ngữ").click()
    await page.get_by_role("heading", name="Purchaser Lê Thị Mua").wait_for()
    assert "Given" in await page.get_by_role("region", name="Consent and unsubscribes").inner_text()
    await page.get_by_role("button", name="Resend the license keys by e-mail").wait_for()
    await shot(page, "17-purchaser-en")
