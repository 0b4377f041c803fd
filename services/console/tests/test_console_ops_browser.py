"""The operations pages in a real browser (Debian's Chromium through Playwright) against the real services:
an e-mail the SMTP server refused is retried from the deliveries page and goes out; a support account is
refused the system page; the system page shows each service ready and the audit chain intact."""

from __future__ import annotations

import uuid

from console_helpers import System, eventually
from playwright.async_api import Page
from spm_common.testing.smtp import SmtpServer
from test_console_browser import browser, labelled, log_in_by_keyboard, page, shot
from test_console_ops import _privacy_request, _suppressed

__all__ = ["browser", "page"]  # fixtures, shared with the other browser tests

SERVICES = ("contact", "orders", "notifier", "audit")


async def test_a_failed_email_is_retried_from_the_deliveries_page_and_sent(
    system: System, page: Page, smtp: SmtpServer
) -> None:
    visitor = f"retry-{uuid.uuid4().hex[:8]}@example.com"
    smtp.reply_for_data = "452 4.3.1 insufficient system storage"
    try:
        message_id = await system.post_message(email=visitor)
        reference = f"contact.message:{message_id}"
        await log_in_by_keyboard(page, system, await system.operator("support"))

        async def failed_row() -> bool:
            await page.goto(f"{system.console_url}/deliveries")
            return await page.get_by_role("row").filter(has_text=reference).count() == 1

        await eventually(failed_row, timeout=30, what="the acknowledgement listed as failed")
    finally:
        smtp.reply_for_data = None
    row = page.get_by_role("row").filter(has_text=reference)
    assert "452 4.3.1 insufficient system storage" in await row.inner_text()
    assert visitor not in await page.content()  # the notifier keeps no address, the page shows none
    await labelled(page)
    await shot(page, "20-deliveries-failed")

    await row.get_by_role("button", name="Gửi lại").click()
    await page.get_by_text("Đã đưa e-mail vào hàng đợi gửi lại.").wait_for()
    await smtp.wait_to(visitor, count=1, timeout=30)

    async def shown_sent() -> bool:
        await page.goto(f"{system.console_url}/inbox/{message_id}")
        return await page.get_by_text("Đã gửi").count() > 0

    await eventually(shown_sent, timeout=30, what="the acknowledgement shown as sent")
    await page.goto(f"{system.console_url}/deliveries")
    assert await page.get_by_role("row").filter(has_text=reference).count() == 0
    await shot(page, "21-deliveries-after-retry")


async def test_a_support_account_is_refused_the_system_page(system: System, page: Page) -> None:
    await log_in_by_keyboard(page, system, await system.operator("support"))
    assert await page.get_by_role("link", name="Hệ thống").count() == 0
    response = await page.goto(f"{system.console_url}/system")
    assert response is not None and response.status == 403
    await page.get_by_text("Trang này chỉ dành cho quản trị viên.").wait_for()


async def test_the_system_page_shows_each_service_ready(system: System, page: Page) -> None:
    await log_in_by_keyboard(page, system, await system.operator("admin"))
    await page.get_by_role("link", name="Hệ thống").click()
    await page.get_by_role("heading", name="Hệ thống").wait_for()
    for name in SERVICES:
        row = page.locator(f"#service-{name}")
        assert "Sẵn sàng" in await row.inner_text(), await row.inner_text()
    await page.locator("#audit-ok").wait_for()
    await labelled(page)
    await shot(page, "22-system")


async def test_every_control_of_the_operations_pages_has_a_label(system: System, page: Page) -> None:
    ref = await _suppressed(system)
    request_id, _ = await _privacy_request(system, overdue=True)
    await log_in_by_keyboard(page, system, await system.operator("admin"))
    await page.goto(f"{system.console_url}/deliveries")
    await page.get_by_role("row").filter(has_text=ref[:12]).get_by_label("Lý do bỏ chặn").wait_for()
    await labelled(page)
    await shot(page, "23-deliveries-admin")
    await page.get_by_role("link", name="Yêu cầu về dữ liệu cá nhân").click()
    await page.locator(f"#request-{request_id}").get_by_label("Lý do gia hạn").wait_for()
    await labelled(page)
    await shot(page, "24-privacy")
    await page.get_by_role("link", name="Thư chết").click()
    await page.get_by_role("heading", name="Thư chết").wait_for()
    await labelled(page)
    await shot(page, "25-dead-letters")
