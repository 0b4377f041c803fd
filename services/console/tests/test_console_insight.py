"""The audit and trends pages in a real browser: the day's page views on the server-drawn chart, rare pages
folded into "fewer than k", the chain verified on request, and one person's events (a look-up recorded as an
operator.action)."""

from __future__ import annotations

import uuid

import httpx
from console_helpers import System, csrf_of, eventually, logged_in
from playwright.async_api import Page
from test_console_browser import browser, labelled, log_in_by_keyboard, page, shot

__all__ = ["browser", "page"]  # the browser fixtures, shared with the other browser tests


async def test_the_trends_chart_shows_the_days_views(system: System, page: Page) -> None:
    path = f"/san-pham/{uuid.uuid4().hex[:8]}"
    # A browser's user agent: the audit service does not count bots (an HTTP library's agent is one).
    browser_agent = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0 Safari/537.36"}
    async with httpx.AsyncClient(base_url=system.audit_url, headers=browser_agent) as audit:
        for _ in range(3):
            sent = await audit.post("/v1/pageviews", json={"url": f"https://spmgroup.vn{path}"})
            assert sent.status_code == 202

    support = await system.operator("support")
    await log_in_by_keyboard(page, system, support)
    await page.get_by_role("link", name="Xu hướng truy cập").click()
    await labelled(page)

    async def counted() -> bool:
        await page.reload()
        return await page.locator("#trends-days tbody tr").count() > 0

    await eventually(counted, what="the views counted")
    [row] = await page.locator("#trends-days tbody tr").all()
    cells = await row.locator("td").all_inner_texts()
    assert int(cells[1]) >= 3 and int(cells[2]) >= 1
    chart = page.locator("svg#trends-chart")
    assert await chart.locator("polyline.views").count() == 1
    assert await chart.locator("circle").count() >= 1
    # One visitor saw the new page: under k, so it is not named but folded.
    assert await page.get_by_text(path).count() == 0
    await page.get_by_text("Các mục khác (mỗi mục ít hơn 5 khách)").first.wait_for()
    await shot(page, "30-trends")


async def test_the_audit_page_verifies_the_chain_and_finds_a_person(system: System, page: Page) -> None:
    visitor = f"kiem-toan-{uuid.uuid4().hex[:8]}@example.vn"
    await system.post_message(email=visitor)
    support = await system.operator("support")
    await log_in_by_keyboard(page, system, support)
    await page.get_by_role("link", name="Nhật ký kiểm toán").click()
    await labelled(page)
    await page.get_by_role("button", name="Kiểm tra ngay").click()
    await page.get_by_text("Chuỗi nguyên vẹn.").wait_for()

    async def found() -> bool:
        await page.goto(f"{system.console_url}/audit?email={visitor}")
        return await page.get_by_text("contact.message.received").count() > 0

    await eventually(found, what="the visitor's events in the trail")
    await shot(page, "31-audit-person")
    actions = {(a["action"], a["target"]) for a in await system.actions(support)}
    assert ("audit.person_viewed", f"audit.events:{visitor}") in actions and (
        "audit.verified",
        "audit.trail",
    ) in actions


async def test_forms_need_their_token_and_releases_need_an_admin(system: System) -> None:
    support = await system.operator("support")
    async with logged_in(system, support) as client:
        page = await client.get("/audit")
        assert page.status_code == 200
        assert (await client.post("/audit/verify", data={"csrf_token": "forged"})).status_code == 403
        verified = await client.post("/audit/verify", data={"csrf_token": csrf_of(page.text)})
        assert verified.status_code == 200 and "Chuỗi nguyên vẹn." in verified.text
        refused = await client.post(
            "/releases/publish", data={"csrf_token": csrf_of(page.text), "kind": "news", "action": "start"}
        )
        assert refused.status_code == 403
        assert (await client.get("/trends?from=2026-12-05&to=2026-01-01")).status_code == 422
    assert [a["action"] for a in await system.actions(support)].count("audit.verified") == 1
