"""The console in a real browser (Debian's Chromium driven by Playwright) against the real contact service,
notifier and SMTP server: an operator logs in and answers a visitor by keyboard, the pages show a visitor's
HTML as text, a support account is refused the admin page, and after logout Back shows nothing.

Screenshots of each page go to SPM_TEST_ARTEFACTS (default test-artefacts/ at the repository's root).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from console_helpers import PASSWORD, System
from playwright.async_api import Browser, Page, async_playwright
from spm_common.testing.smtp import SmtpServer

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[3]
ARTEFACTS = Path(os.environ.get("SPM_TEST_ARTEFACTS", ROOT / "test-artefacts")) / "console"
# Every form control must have a label a screen reader announces.
UNLABELLED = (
    "() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]"
    ".filter(e => e.labels.length === 0).map(e => e.name)"
)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("no /usr/bin/chromium: apt-get install -y --no-install-recommends chromium")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        await browser.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(locale="vi-VN")
    page = await context.new_page()
    page.set_default_timeout(15_000)
    dialogs: list[str] = []
    # A script of a visitor's that ran would open one of these.
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.dialogs = dialogs  # type: ignore[attr-defined]
    yield page
    await context.close()


async def shot(page: Page, name: str) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTEFACTS / f"{name}.png"), full_page=True)


async def labelled(page: Page) -> None:
    assert await page.evaluate(UNLABELLED) == [], f"controls without a label on {page.url}"


async def log_in_by_keyboard(page: Page, system: System, email: str) -> None:
    await page.goto(f"{system.console_url}/login")
    await labelled(page)
    await page.get_by_label("Địa chỉ e-mail").focus()
    await page.keyboard.type(email)
    await page.keyboard.press("Tab")
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/inbox")


async def test_an_operator_finds_a_message_without_diacritics_and_answers_it_by_keyboard(
    system: System, page: Page, smtp: SmtpServer
) -> None:
    tag = uuid.uuid4().hex[:6]
    visitor = f"khach-{tag}@example.com"
    await system.post_message(
        name="Nguyễn Thị Hoà",
        email=visitor,
        subject=f"Mất khoá bản quyền {tag}",
        message="Tôi đã cài lại máy và bị mất khoá bản quyền Từ điển SPM.",
        locale="vi",
    )
    await smtp.wait_to(visitor, count=1, timeout=20)  # the acknowledgement
    email = await system.operator()

    await page.goto(f"{system.console_url}/login")
    await shot(page, "01-login")
    await log_in_by_keyboard(page, system, email)
    await labelled(page)
    await shot(page, "02-inbox")

    search = page.get_by_label("Tìm theo tên, tiêu đề hoặc nội dung")
    await search.focus()
    await page.keyboard.type(f"mat khoa ban quyen {tag}")
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/inbox?*q=*")
    link = page.get_by_role("link", name=f"Mất khoá bản quyền {tag}")
    await shot(page, "03-search")
    assert await page.locator("tbody tr").count() == 1
    await link.focus()
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/inbox/*")
    await labelled(page)
    await page.get_by_text("Tôi đã cài lại máy").wait_for()
    await shot(page, "04-thread")

    await page.get_by_label("Nội dung trả lời").focus()
    await page.keyboard.type("Chào chị Hoà, khoá bản quyền mới đã được gửi lại.")
    await page.keyboard.press("Tab")  # to Preview
    await page.keyboard.press("Enter")
    preview = page.get_by_role("region", name="Bản xem trước (chưa gửi)")
    await preview.wait_for()
    assert "khoá bản quyền mới" in await preview.inner_text()
    await shot(page, "05-preview")
    assert await page.get_by_label("Nội dung trả lời").input_value() == (
        "Chào chị Hoà, khoá bản quyền mới đã được gửi lại."
    )
    await page.get_by_label("Nội dung trả lời").focus()
    await page.keyboard.press("Tab")
    await page.keyboard.press("Tab")  # to Send
    await page.keyboard.press("Enter")
    await page.get_by_text("Đã gửi trả lời").wait_for()
    await shot(page, "06-replied")

    mails = await smtp.wait_to(visitor, count=2, timeout=30)
    reply = mails[-1].message
    text = reply.get_body(preferencelist=("plain",))
    assert text is not None and "khoá bản quyền mới đã được gửi lại" in text.get_content()
    # Its delivery shows in the thread once the notifier's report has reached the contact service.
    delivery = page.locator(".reply .delivery")
    for _ in range(100):
        await page.reload()
        if await delivery.inner_text() == "Đã gửi":
            break
        await page.wait_for_timeout(200)
    assert await delivery.inner_text() == "Đã gửi"
    assert await page.locator(".reply").get_by_text(f"Trả lời bởi {email}").count() == 1
    await shot(page, "07-delivered")


async def test_a_visitors_html_is_shown_as_text(system: System, page: Page) -> None:
    tag = uuid.uuid4().hex[:6]
    attack = f'<script>alert("x")</script><img src=x onerror="alert(1)"> {tag}'
    message_id = await system.post_message(name=f"<b>Kẻ xấu</b> {tag}", subject=attack, message=attack)
    await log_in_by_keyboard(page, system, await system.operator())
    await page.goto(f"{system.console_url}/inbox?q={tag}")
    await page.goto(f"{system.console_url}/inbox/{message_id}")
    await page.get_by_text('<script>alert("x")</script>').first.wait_for()
    await shot(page, "08-html-as-text")
    assert page.dialogs == []  # type: ignore[attr-defined]
    assert await page.locator("main img").count() == 0 and await page.locator("main b").count() == 0


async def test_a_support_account_is_refused_the_admin_page(system: System, page: Page) -> None:
    await log_in_by_keyboard(page, system, await system.operator("support"))
    response = await page.goto(f"{system.console_url}/operators")
    assert response is not None and response.status == 403
    await page.get_by_text("Trang này chỉ dành cho quản trị viên.").wait_for()
    await shot(page, "09-forbidden")


async def test_an_admin_sees_the_operators_in_english(system: System, page: Page) -> None:
    admin = await system.operator("admin")
    await log_in_by_keyboard(page, system, admin)
    await page.get_by_label("Ngôn ngữ").select_option("en")
    await page.get_by_role("button", name="Đổi ngôn ngữ").click()
    await page.get_by_role("heading", name="Inbox").wait_for()
    await page.get_by_role("link", name="Operator accounts").click()
    await page.get_by_role("cell", name=admin).wait_for()
    await labelled(page)
    await shot(page, "10-operators-en")


async def test_after_logout_back_shows_nothing(system: System, page: Page) -> None:
    tag = uuid.uuid4().hex[:6]
    message_id = await system.post_message(message=f"Nội dung riêng tư {tag}")
    await log_in_by_keyboard(page, system, await system.operator())
    await page.goto(f"{system.console_url}/inbox/{message_id}")
    await page.get_by_text(f"Nội dung riêng tư {tag}").wait_for()
    await page.get_by_role("button", name="Đăng xuất").click()
    await page.wait_for_url("**/login?notice=logged_out")
    await shot(page, "11-logged-out")
    await page.go_back()
    await page.wait_for_load_state()
    assert "/login" in page.url
    assert await page.get_by_text(f"Nội dung riêng tư {tag}").count() == 0
    await shot(page, "12-back-after-logout")


async def test_an_order_is_found_and_its_keys_revealed_on_request(system: System, page: Page) -> None:
    buyer = f"mua-{uuid.uuid4().hex[:8]}@example.vn"
    shop_id = await system.place_order(buyer)
    [key] = await system.license_keys(shop_id)
    await log_in_by_keyboard(page, system, await system.operator())
    await page.get_by_role("link", name="Đơn hàng").click()
    await page.get_by_label("Địa chỉ e-mail của người mua hoặc mã đơn hàng").fill(buyer)
    await page.keyboard.press("Enter")
    await page.get_by_role("link", name=shop_id).click()
    await page.get_by_role("heading", name=f"Đơn hàng {shop_id}").wait_for()
    await labelled(page)
    assert await page.get_by_text(key).count() == 0
    await shot(page, "13-order-masked")
    await page.get_by_role("button", name="Hiện đầy đủ khoá bản quyền").click()
    await page.get_by_text(key).wait_for()
    await shot(page, "14-order-revealed")
