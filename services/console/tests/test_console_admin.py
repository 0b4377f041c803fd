"""`spm-console-admin operator add|list|disable|reset` (its typer app, with the environment an operator's
shell would give it) and what each does to logging in."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from console.admin import cli
from console_helpers import PASSWORD, System, csrf_of
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
