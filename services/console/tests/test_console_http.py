"""The console over HTTP: headers, login and its limits, sessions, CSRF, roles, language, the audit events."""

from __future__ import annotations

import html
import ipaddress
import re
import uuid
from typing import Any

import httpx
import pytest
from console import store
from console.app import create as create_console
from console_helpers import PASSWORD, System, csrf_of, eventually, logged_in
from spm_common.testing.clock import clear_of_window_edges


async def test_pages_carry_the_security_headers_and_are_not_stored(system: System) -> None:
    async with httpx.AsyncClient(base_url=system.console_url) as client:
        response = await client.get("/login")
    assert response.status_code == 200
    csp = response.headers["content-security-policy"]
    assert "script-src" not in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    assert "<script" not in response.text and "style=" not in response.text
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie


async def test_a_page_needs_a_session(system: System) -> None:
    async with httpx.AsyncClient(base_url=system.console_url) as client:
        response = await client.get("/inbox")
    assert response.status_code == 303 and response.headers["location"] == "/login"


async def test_login_in_vietnamese_by_default_and_english_on_request(system: System) -> None:
    email = await system.operator()
    async with logged_in(system, email) as client:
        inbox = await client.get("/inbox")
        assert inbox.status_code == 200 and 'lang="vi"' in inbox.text and "Hộp thư" in inbox.text
        switched = await client.post(
            "/language", data={"lang": "en", "next": "/inbox?state=closed", "csrf_token": csrf_of(inbox.text)}
        )
        assert switched.status_code == 303 and switched.headers["location"] == "/inbox?state=closed"
        page = await client.get("/inbox")
        assert 'lang="en"' in page.text and "Inbox" in page.text and "Hộp thư" not in page.text
        # Back only to a page of the console.
        elsewhere = await client.post(
            "/language", data={"lang": "vi", "next": "//evil.example/", "csrf_token": csrf_of(page.text)}
        )
        assert elsewhere.headers["location"] == "/inbox"


async def test_wrong_password_is_refused_then_the_account_is_rate_limited(system: System) -> None:
    await clear_of_window_edges(system.console.console_login_window_seconds)
    email = await system.operator()
    async with httpx.AsyncClient(base_url=system.console_url) as client:
        token = csrf_of((await client.get("/login")).text)
        for _ in range(system.console.console_login_failures_per_account):
            wrong = await client.post("/login", data={"email": email, "password": "nope", "csrf_token": token})
            assert wrong.status_code == 401 and "spm_console_session" not in wrong.headers.get("set-cookie", "")
        # Even the right password now waits: the account is being guessed.
        limited = await client.post("/login", data={"email": email, "password": PASSWORD, "csrf_token": token})
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
        assert "spm_console_session" not in limited.headers.get("set-cookie", "")


@pytest.mark.parametrize("behind_a_proxy", [True, False], ids=["trusted-proxy", "no-trusted-proxy"])
async def test_login_failures_count_against_the_client_behind_a_trusted_proxy(
    system: System, behind_a_proxy: bool
) -> None:
    """Behind the TLS proxy every login comes from the proxy: keyed on the TCP peer, one guesser would lock
    every operator out. An untrusted peer's X-Forwarded-For is the client's own claim, and ignored."""
    await clear_of_window_edges(system.console.console_login_window_seconds)
    proxy = f"198.51.100.{uuid.uuid4().int % 250 + 1}"
    settings = system.console.model_copy(
        update={
            "console_login_failures_per_client": 3,
            "trusted_proxies": [ipaddress.ip_network(proxy)] if behind_a_proxy else [],
        }
    )
    email = await system.operator()
    app = create_console(settings)
    transport = httpx.ASGITransport(app=app, client=(proxy, 40000))
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        token = csrf_of((await client.get("/login")).text)

        async def login(forwarded_for: str, address: str, password: str) -> int:
            data = {"email": address, "password": password, "csrf_token": token}
            return (await client.post("/login", data=data, headers={"X-Forwarded-For": forwarded_for})).status_code

        guesser = f"2001:db8:{uuid.uuid4().hex[:4]}:1::7"
        colleague = f"2001:db8:{uuid.uuid4().hex[:4]}:1::8"
        # Accounts that do not exist, so that no account's own limit is what refuses.
        assert [await login(guesser, f"nobody-{i}@example.com", "nope") for i in range(3)] == [401] * 3
        assert await login(guesser, email, PASSWORD) == 429
        # An IPv6 client is counted by its /64.
        assert await login(guesser.replace("::7", ":ffff::9"), email, PASSWORD) == 429
        assert await login(colleague, email, PASSWORD) == (303 if behind_a_proxy else 429)


async def test_login_without_its_csrf_token_is_refused(system: System) -> None:
    email = await system.operator()
    async with httpx.AsyncClient(base_url=system.console_url) as client:
        await client.get("/login")
        response = await client.post("/login", data={"email": email, "password": PASSWORD})
        assert response.status_code == 403
        forged = await client.post("/login", data={"email": email, "password": PASSWORD, "csrf_token": "forged"})
        assert forged.status_code == 403 and "spm_console_session" not in forged.headers.get("set-cookie", "")


async def test_forged_csrf_tampered_cookie_and_expired_session_change_nothing(system: System) -> None:
    email = await system.operator()
    message_id = await system.post_message(subject=f"CSRF {uuid.uuid4().hex[:6]}")
    async with logged_in(system, email) as client:
        page = await client.get(f"/inbox/{message_id}")
        assert page.status_code == 200
        token = csrf_of(page.text)
        for data in ({}, {"csrf_token": "forged"}, {"csrf_token": token[:-1] + "x"}):
            response = await client.post(f"/inbox/{message_id}/close", data=data)
            assert response.status_code == 403
        assert "Đóng thư" in (await client.get(f"/inbox/{message_id}")).text  # still open

        session = client.cookies["spm_console_session"]
        tampered = httpx.AsyncClient(base_url=system.console_url, cookies={"spm_console_session": "x" + session})
        async with tampered:
            response = await tampered.post(f"/inbox/{message_id}/close", data={"csrf_token": token})
            assert response.status_code == 401

        conn = await system.db()
        try:
            await conn.execute(
                "UPDATE sessions SET last_seen_at = now() - interval '31 minutes'"
                " WHERE operator_id = (SELECT id FROM operators WHERE email = $1)",
                email,
            )
        finally:
            await conn.close()
        expired = await client.post(f"/inbox/{message_id}/close", data={"csrf_token": token})
        assert expired.status_code == 401
        assert (await client.get("/inbox")).headers["location"] == "/login"
    async with logged_in(system, email) as client:
        assert "Đóng thư" in (await client.get(f"/inbox/{message_id}")).text  # still open


async def test_a_session_ends_after_its_lifetime_however_busy(system: System) -> None:
    email = await system.operator()
    async with logged_in(system, email) as client:
        conn = await system.db()
        try:
            await conn.execute(
                "UPDATE sessions SET expires_at = now() - interval '1 second'"
                " WHERE operator_id = (SELECT id FROM operators WHERE email = $1)",
                email,
            )
        finally:
            await conn.close()
        assert (await client.get("/inbox")).status_code == 303


async def test_support_is_refused_the_admin_pages_and_admin_is_not(system: System) -> None:
    support = await system.operator("support")
    admin = await system.operator("admin")
    async with logged_in(system, support) as client:
        page = await client.get("/operators")
        assert page.status_code == 403 and support not in page.text.split("Đang đăng nhập")[-1].split("</form>")[-1]
        assert 'href="/operators"' not in (await client.get("/inbox")).text
    async with logged_in(system, admin) as client:
        page = await client.get("/operators")
        assert page.status_code == 200 and support in page.text and admin in page.text


async def test_a_one_time_password_must_be_replaced_first(system: System) -> None:
    email = await system.operator(must_change=True)
    async with logged_in(system, email) as client:
        assert (await client.get("/inbox")).headers["location"] == "/account/password"
        form = await client.get("/account/password")
        short = await client.post(
            "/account/password",
            data={"current_password": PASSWORD, "new_password": "short", "csrf_token": csrf_of(form.text)},
        )
        assert short.status_code == 422
        changed = await client.post(
            "/account/password",
            data={
                "current_password": PASSWORD,
                "new_password": "a much longer new password",
                "csrf_token": csrf_of(form.text),
            },
        )
        assert changed.status_code == 303
        assert (await client.get("/inbox")).status_code == 200


async def test_logout_ends_the_session(system: System) -> None:
    email = await system.operator()
    async with logged_in(system, email) as client:
        session = client.cookies["spm_console_session"]
        page = await client.get("/inbox")
        out = await client.post("/logout", data={"csrf_token": csrf_of(page.text)})
        assert out.status_code == 303
    async with httpx.AsyncClient(base_url=system.console_url, cookies={"spm_console_session": session}) as stolen:
        assert (await stolen.get("/inbox")).status_code == 303


async def test_every_view_and_action_is_an_operator_action_event(system: System) -> None:
    email = await system.operator()
    message_id = await system.post_message()
    async with logged_in(system, email) as client:
        page = await client.get(f"/inbox/{message_id}")
        await client.post(f"/inbox/{message_id}/close", data={"csrf_token": csrf_of(page.text)})
        await client.get("/inbox", params={"q": "someone@example.com", "state": "closed"})
    actions = [(a["action"], a["target"]) for a in await system.actions(email)]
    assert actions == [
        ("operator.logged_in", "console"),
        ("message.viewed", f"contact.message:{message_id}"),
        ("message.closed", f"contact.message:{message_id}"),
        ("messages.listed", "contact.messages:closed search:someone@example.com"),
    ]

    # Through the console's outbox and the exchange into the audit trail, with every address pseudonymised.
    async def recorded() -> list[str] | None:
        rows = await system.trail("operator.action")
        mine = [row["payload"] for row in rows if f"contact.message:{message_id}" in row["payload"]]
        return mine if len(mine) == 2 else None

    for payload in await eventually(recorded, what="the operator's actions in the audit trail"):
        assert email not in payload and email.split("@")[0] not in payload

    # The search, the last action, may reach the trail after the others: filed under the person searched for.
    async def searched() -> list[Any] | None:
        rows = [row for row in await system.trail("operator.action") if "closed search:" in row["payload"]]
        return rows if any(row["subject_ref"] for row in rows) else None

    rows = await eventually(searched, what="the search in the audit trail, filed under the person")
    assert all("someone@" not in row["payload"] for row in rows)


async def test_ended_sessions_are_swept(system: System) -> None:
    email = await system.operator()
    async with logged_in(system, email):
        pass
    conn = await system.db()
    try:
        await conn.execute(
            "UPDATE sessions SET last_seen_at = now() - interval '2 hours'"
            " WHERE operator_id = (SELECT id FROM operators WHERE email = $1)",
            email,
        )
        assert await store.sweep_sessions(conn, system.console.console_idle_minutes * 60) >= 1
        left = await conn.fetchval(
            "SELECT count(*) FROM sessions WHERE operator_id = (SELECT id FROM operators WHERE email = $1)", email
        )
    finally:
        await conn.close()
    assert left == 0


async def test_the_inbox_pages_newest_first_and_a_closed_message_can_be_reopened(system: System) -> None:
    tag = uuid.uuid4().hex[:8]
    size = system.console.console_page_size
    ids = [await system.post_message(subject=f"Trang {tag} số {i}") for i in range(size + 2)]
    email = await system.operator()
    async with logged_in(system, email) as client:
        first = await client.get("/inbox", params={"q": tag})
        shown = re.findall(r'href="/inbox/([0-9a-f-]{36})"', first.text)
        assert shown == list(reversed(ids))[:size]
        [next_url] = re.findall(r'href="([^"]+)" rel="next"', first.text)
        second = await client.get(html.unescape(next_url))
        assert re.findall(r'href="/inbox/([0-9a-f-]{36})"', second.text) == list(reversed(ids))[size:]
        assert 'rel="next"' not in second.text

        page = await client.get(f"/inbox/{ids[0]}")
        await client.post(f"/inbox/{ids[0]}/close", data={"csrf_token": csrf_of(page.text)})
        closed = await client.get("/inbox", params={"q": tag, "state": "closed"})
        assert re.findall(r'href="/inbox/([0-9a-f-]{36})"', closed.text) == [ids[0]]
        thread = await client.get(f"/inbox/{ids[0]}")
        assert "Mở lại thư" in thread.text and 'name="body"' not in thread.text  # no reply to a closed one
        reopened = await client.post(f"/inbox/{ids[0]}/reopen", data={"csrf_token": csrf_of(thread.text)})
        assert reopened.status_code == 303
        assert 'name="body"' in (await client.get(f"/inbox/{ids[0]}")).text
        assert "Không có thư nào." in (await client.get("/inbox", params={"q": tag, "state": "closed"})).text
