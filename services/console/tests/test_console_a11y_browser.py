"""Accessibility in a real browser (Debian's Chromium through Playwright): on every page of the console, every
control (input, select, textarea, button) has an accessible name, as Playwright's accessibility tree computes
it; and the everyday flows work by keyboard alone: log in with Tab and Enter, reach the search, find a
message and open it, and (admin) add an operator account.

The screenshots saved as `docs-*.png` (1280 x 800, the viewport only) are the README's pictures."""

from __future__ import annotations

import re
import uuid

import httpx
from console_helpers import PASSWORD, System, csrf_of, logged_in
from playwright.async_api import Browser, Locator, Page
from test_console_browser import ARTEFACTS, browser, page

__all__ = ["browser", "page"]  # the browser fixtures, shared with the other browser tests

CONTROLS = "input:not([type=hidden]), select, textarea, button"
# The first line of an element's ARIA snapshot: its role, then its accessible name in quotes when it has one.
NAMED = re.compile(r'^- [\w-]+ "[^"]*\S[^"]*"')
# Enough Tab presses to cross any page's header (skip link, 11 links, language form, logout) and then some.
MAX_TABS = 60


async def unnamed_controls(page: Page) -> list[str]:
    """Each control of the page whose accessible name is empty, described by its tag, type and name."""
    controls = page.locator(CONTROLS)
    missing = []
    for i in range(await controls.count()):
        control = controls.nth(i)
        snapshot = await control.aria_snapshot()
        if not NAMED.match(snapshot.splitlines()[0] if snapshot else ""):
            missing.append(
                await control.evaluate("e => `${e.tagName.toLowerCase()}[type=${e.type}][name=${e.name}]`")
                + f" {snapshot!r}"
            )
    return missing


async def accessible(page: Page, url: str, status: int = 200) -> None:
    """Go to `url` and check the page: its status, one main heading, and every control named."""
    response = await page.goto(url)
    assert response is not None and response.status == status, (url, response and response.status)
    assert await page.get_by_role("heading", level=1).count() == 1, url
    assert await unnamed_controls(page) == [], f"controls without an accessible name on {url}"
    assert await page.locator(CONTROLS).count() > 0, url  # the language switch, at least


async def docs_shot(page: Page, name: str) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTEFACTS / f"docs-{name}.png"), full_page=False)


async def tab_to(page: Page, target: Locator) -> int:
    """Press Tab until `target` has the focus; returns how many presses it took."""
    for presses in range(1, MAX_TABS + 1):
        await page.keyboard.press("Tab")
        if await target.evaluate("e => e === document.activeElement"):
            return presses
    raise AssertionError(f"{target} not reached with {MAX_TABS} Tab presses")


async def fanout_url(system: System, admin: str) -> str:
    """A fan-out of an upgrade no one bought: its page exists, and no one is mailed."""
    sku = f"T-A11Y-{uuid.uuid4().hex[:6].upper()}"
    async with logged_in(system, admin) as client:
        csrf = csrf_of((await client.get("/releases")).text)
        product = {"sku": sku, "name_vi": "Thử", "name_en": "Test", "download_url": "https://spmgroup.vn/dl/t.exe"}
        saved = await client.post("/releases/products", data={**product, "major_version": "1", "csrf_token": csrf})
        assert saved.status_code in (200, 303), saved.text
        started = await client.post(
            "/releases/publish",
            data={
                "csrf_token": csrf,
                "kind": "upgrade",
                "release_id": f"{sku}-1.0.1",
                "sku": sku,
                "version": "1.0.1",
                "title": "Bản 1.0.1",
                "download_url": "https://spmgroup.vn/dl/t-1.0.1.exe",
                "action": "start",
            },
        )
        assert started.status_code == 303, started.text
        return system.console_url + started.headers["location"]


async def test_every_control_of_every_page_has_an_accessible_name(browser: Browser, system: System) -> None:
    tag = uuid.uuid4().hex[:6]
    visitor = f"a11y-{tag}@example.com"
    message_id = await system.post_message(email=visitor, subject=f"Hỏi về bản quyền {tag}")
    buyer = f"a11y-buyer-{tag}@example.vn"
    await system.place_order(buyer)
    admin = await system.operator("admin")
    fanout = await fanout_url(system, admin)
    context = await browser.new_context(locale="vi-VN", viewport={"width": 1280, "height": 800})
    try:
        page = await context.new_page()
        page.set_default_timeout(15_000)
        base = system.console_url
        await accessible(page, f"{base}/login")
        await docs_shot(page, "login")
        await page.get_by_label("Địa chỉ e-mail").fill(admin)
        await page.get_by_label("Mật khẩu").fill(PASSWORD)
        await page.get_by_role("button", name="Đăng nhập").click()
        await page.wait_for_url("**/inbox")
        for path in [
            "/inbox",
            "/inbox?state=closed",
            f"/inbox?q={tag}",
            f"/inbox/{message_id}",
            "/orders",
            f"/orders?q={buyer}",
        ]:
            await accessible(page, base + path)
            if path.startswith("/inbox/"):
                await docs_shot(page, "message")
        await page.get_by_role("link", name=re.compile("^FS-2026-")).first.click()
        await accessible(page, page.url)
        for path in [
            "/audit",
            f"/audit?email={visitor}",
            "/trends",
            "/operators",
            "/deliveries",
            "/privacy",
            "/system",
            "/dead-letters",
            "/releases",
            "/account/password",
        ]:
            await accessible(page, base + path)
            if path == "/releases":
                await docs_shot(page, "releases")
        await accessible(page, fanout)
        await accessible(page, f"{base}/inbox/{uuid.uuid4()}", status=404)
        # The same in English.
        await page.goto(f"{base}/inbox")
        await page.get_by_label("Ngôn ngữ").select_option("en")
        await page.get_by_role("button", name="Đổi ngôn ngữ").click()
        await page.get_by_role("heading", name="Inbox").wait_for()
        for path in ["/inbox", f"/inbox/{message_id}", "/operators", "/system", "/releases", "/deliveries"]:
            await accessible(page, base + path)
    finally:
        await context.close()


async def test_an_operator_logs_in_searches_and_opens_a_message_by_keyboard_alone(system: System, page: Page) -> None:
    tag = uuid.uuid4().hex[:6]
    await system.post_message(subject=f"Khoá bản quyền {tag}", message="Xin gửi lại khoá.")
    email = await system.operator("support")
    await page.goto(f"{system.console_url}/login")
    # From the top of the page: the skip link comes first, then the header, then the form.
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.textContent") == "Bỏ qua, đến nội dung chính"
    await tab_to(page, page.get_by_label("Địa chỉ e-mail"))
    await page.keyboard.type(email)
    await page.keyboard.press("Tab")
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/inbox")

    await tab_to(page, page.get_by_label("Tìm theo tên, tiêu đề hoặc nội dung"))
    await page.keyboard.type(f"khoa ban quyen {tag}")
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/inbox?*q=*")
    await tab_to(page, page.get_by_role("link", name=f"Khoá bản quyền {tag}"))
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/inbox/*")
    await page.get_by_text("Xin gửi lại khoá.").wait_for()

    await tab_to(page, page.get_by_role("button", name="Đăng xuất"))
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/login?notice=logged_out")


async def test_an_admin_adds_an_operator_by_keyboard_alone(system: System, page: Page) -> None:
    admin = await system.operator("admin")
    address = f"lan-{uuid.uuid4().hex[:6]}@spmgroup.vn"
    await page.set_viewport_size({"width": 1280, "height": 800})
    await page.goto(f"{system.console_url}/login")
    await tab_to(page, page.get_by_label("Địa chỉ e-mail"))
    await page.keyboard.type(admin)
    await page.keyboard.press("Tab")
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/inbox")
    await docs_shot(page, "inbox")

    await tab_to(page, page.get_by_role("link", name="Tài khoản vận hành"))
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/operators")
    await tab_to(page, page.get_by_label("Địa chỉ e-mail"))
    await page.keyboard.type(address)
    await page.keyboard.press("Tab")  # to the role
    await page.keyboard.press("ArrowDown")  # support -> admin
    await page.keyboard.press("Tab")  # to the button
    await page.keyboard.press("Enter")
    await page.get_by_text("Đã tạo tài khoản.").wait_for()
    password = await page.locator("#one-time-password").inner_text()
    assert len(password) >= 20
    row = page.get_by_role("row").filter(has_text=address)
    assert "Quản trị" in await row.inner_text()
    await docs_shot(page, "operators")

    # The new admin logs in with it and is sent to change it first.
    async with httpx.AsyncClient(base_url=system.console_url) as client:
        login = await client.get("/login")
        first = await client.post(
            "/login", data={"email": address, "password": password, "csrf_token": csrf_of(login.text)}
        )
        assert first.status_code == 303 and first.headers["location"] == "/account/password"

    await page.goto(f"{system.console_url}/system")
    await page.locator("#queue-orders").wait_for()
    await docs_shot(page, "system")
