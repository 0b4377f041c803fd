"""`spm-console-admin operator add|list|disable|reset` (its typer app, with the environment an operator's
shell would give it), the same from the web (`/operators`, admin only), and what each does to logging in."""

from __future__ import annotations

import asyncio
import html
import re
import uuid

import asyncpg
import httpx
from console.admin import cli
from console_helpers import PASSWORD, System, csrf_of, logged_in
from typer.testing import CliRunner


async def admin(system: System, *args: str) -> tuple[int, str, str]:
    """Exit code, standard output and standard error of the command (in a thread: it runs its own loop)."""
    result = await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=system.world.env())
    return result.exit_code, result.stdout, result.stderr


async def log_in(system: System, email: str, password: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=system.console_url) as client:
        page = await client.get("/login")
        return await client.post(
            "/login", data={"email": email, "password": password, "csrf_token": csrf_of(page.text)}
        )


async def test_add_list_reset_and_disable_an_operator(system: System) -> None:
    email = f"Lan.{uuid.uuid4().hex[:6]}@SPMgroup.vn"
    code, out, _ = await admin(system, "operator", "add", email, "--role", "admin")
    assert code == 0, out
    password = out.strip().splitlines()[-1]
    assert len(password) >= 20 and password not in (await admin(system, "operator", "list"))[1]
    address = email.lower()

    first = await log_in(system, address, password)
    assert first.status_code == 303 and first.headers["location"] == "/account/password"

    code, out, _ = await admin(system, "operator", "list")
    assert f"{address}\tadmin\tactive" in out

    code, _, err = await admin(system, "operator", "add", address)
    assert code == 1 and "exists already" in err

    code, out, _ = await admin(system, "operator", "reset", address)
    assert code == 0
    new_password = out.strip().splitlines()[-1]
    assert new_password != password
    assert (await log_in(system, address, password)).status_code == 401
    assert (await log_in(system, address, new_password)).status_code == 303

    code, out, _ = await admin(system, "operator", "disable", address)
    assert code == 0
    assert (await log_in(system, address, new_password)).status_code == 401
    assert f"{address}\tadmin\tdisabled" in (await admin(system, "operator", "list"))[1]

    code, _, err = await admin(system, "operator", "add", "not-an-address", "--role", "admin")
    assert code != 0
    code, _, err = await admin(system, "operator", "add", f"x{address}", "--role", "root")
    assert code != 0 and "support or admin" in err


async def test_disabling_ends_the_open_sessions(system: System) -> None:
    email = await system.operator()
    async with httpx.AsyncClient(base_url=system.console_url) as client:
        page = await client.get("/login")
        await client.post("/login", data={"email": email, "password": PASSWORD, "csrf_token": csrf_of(page.text)})
        assert (await client.get("/inbox")).status_code == 200
        code, _, _ = await admin(system, "operator", "disable", email)
        assert code == 0
        assert (await client.get("/inbox")).status_code == 303


ONE_TIME_RE = re.compile(r'<code id="one-time-password">([^<]+)</code>')


async def operator_row(system: System, email: str) -> asyncpg.Record | None:
    conn = await system.db()
    try:
        return await conn.fetchrow("SELECT * FROM operators WHERE email = $1", email)
    finally:
        await conn.close()


def one_time_password(page: str) -> str:
    match = ONE_TIME_RE.search(page)
    assert match, "no one-time password on the page"
    return html.unescape(match.group(1))


async def test_an_admin_adds_resets_and_disables_an_operator_from_the_web(system: System) -> None:
    admin_email = await system.operator("admin")
    address = f"mai.{uuid.uuid4().hex[:6]}@spmgroup.vn"
    async with logged_in(system, admin_email) as client:
        page = (await client.get("/operators")).text
        assert 'action="/operators"' in page and 'for="new-operator-email"' in page
        token = csrf_of(page)

        # Without the form's CSRF token nothing is made.
        forged = await client.post("/operators", data={"email": address, "role": "support", "csrf_token": "x" * 43})
        assert forged.status_code == 403 and await operator_row(system, address) is None
        # Bad input: a clear 422, nothing made.
        bad = await client.post("/operators", data={"email": "not-an-address", "role": "support", "csrf_token": token})
        assert bad.status_code == 422 and "Địa chỉ e-mail không hợp lệ." in bad.text
        bad = await client.post("/operators", data={"email": address, "role": "root", "csrf_token": token})
        assert bad.status_code == 422 and "Vai trò không hợp lệ." in bad.text
        assert await operator_row(system, address) is None

        added = await client.post(
            "/operators", data={"email": f" {address.upper()} ", "role": "support", "csrf_token": token}
        )
        assert added.status_code == 200 and "Đã tạo tài khoản." in added.text
        password = one_time_password(added.text)
        row = await operator_row(system, address)
        assert row is not None and row["role"] == "support" and row["must_change"]
        assert password not in row["password_hash"]
        again = await client.post("/operators", data={"email": address, "role": "admin", "csrf_token": token})
        assert again.status_code == 409 and "Đã có tài khoản với địa chỉ này" in again.text
        assert (await operator_row(system, address))["role"] == "support"  # type: ignore[index]

        first = await log_in(system, address, password)
        assert first.status_code == 303 and first.headers["location"] == "/account/password"

        # The new operator holds a session while the admin resets the password: the session ends.
        async with httpx.AsyncClient(base_url=system.console_url) as theirs:
            login_page = await theirs.get("/login")
            await theirs.post(
                "/login", data={"email": address, "password": password, "csrf_token": csrf_of(login_page.text)}
            )
            assert (await theirs.get("/account/password")).status_code == 200
            reset = await client.post(f"/operators/{row['id']}/reset", data={"csrf_token": token})
            assert reset.status_code == 200 and "Đã đặt lại mật khẩu" in reset.text
            new_password = one_time_password(reset.text)
            assert new_password != password
            assert (await theirs.get("/account/password")).status_code == 303  # back to the login page
        assert (await log_in(system, address, password)).status_code == 401
        assert (await log_in(system, address, new_password)).status_code == 303

        disabled = await client.post(f"/operators/{row['id']}/disable", data={"csrf_token": token})
        assert disabled.status_code == 200 and "Đã khoá tài khoản" in disabled.text
        assert (await operator_row(system, address))["disabled_at"] is not None  # type: ignore[index]
        assert (await log_in(system, address, new_password)).status_code == 401

        # Not one's own account, not an unknown one.
        me = await operator_row(system, admin_email)
        assert me is not None
        own = await client.post(f"/operators/{me['id']}/disable", data={"csrf_token": token})
        assert own.status_code == 409 and (await operator_row(system, admin_email))["disabled_at"] is None  # type: ignore[index]
        unknown = await client.post(f"/operators/{uuid.uuid4()}/reset", data={"csrf_token": token})
        assert unknown.status_code == 404

        await client.post("/language", data={"csrf_token": token, "lang": "en", "next": "/operators"})
        english = (await client.get("/operators")).text
        assert "Add an account" in english and f"Disable the account of {admin_email}" not in english
        assert "Reset the password of" in english

    actions = [(a["action"], a["target"]) for a in await system.actions(admin_email)]
    for action in ("operator.added", "operator.password_reset", "operator.disabled"):
        assert (action, f"console.operator:{address}") in actions, action


async def test_a_support_account_may_not_manage_operators(system: System) -> None:
    support = await system.operator("support")
    colleague = await system.operator("admin")
    before = await operator_row(system, colleague)
    assert before is not None
    address = f"new-{uuid.uuid4().hex[:6]}@spmgroup.vn"
    async with logged_in(system, support) as client:
        token = csrf_of((await client.get("/inbox")).text)  # a valid token of its own session
        added = await client.post("/operators", data={"email": address, "role": "admin", "csrf_token": token})
        assert added.status_code == 403 and "Trang này chỉ dành cho quản trị viên." in added.text
        for action in ("reset", "disable"):
            refused = await client.post(f"/operators/{before['id']}/{action}", data={"csrf_token": token})
            assert refused.status_code == 403
    assert await operator_row(system, address) is None
    after = await operator_row(system, colleague)
    assert after is not None and after["password_hash"] == before["password_hash"] and after["disabled_at"] is None
    assert not [
        a
        for a in await system.actions(support)
        if a["action"].startswith("operator.") and a["action"] != "operator.logged_in"
    ]
