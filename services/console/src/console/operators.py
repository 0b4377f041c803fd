"""Operator accounts from the web (admin; the list is api.py's `GET /operators`): add, disable, reset a
password, as `spm-console-admin operator` does from a shell. A one-time password is shown once, on the answer
to the form that made it (never in a URL, never stored but as its hash); it must be replaced at the first login.

Each action is recorded (`operator.action`, target `console.operator:<address>`) before it is done.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request, status
from fastapi.responses import Response

from console import accounts, store
from console.api import AdminDep, checked_form, field, record, render, state_of
from console.store import OperatorRow, SessionRow

operator_pages = APIRouter(include_in_schema=False)


async def _page(request: Request, session: SessionRow, status_code: int = 200, **context: Any) -> Response:
    console = state_of(request)
    await record(request, session, "operators.listed", "console.operators")
    async with console.runtime.pool.acquire() as conn:
        found = await store.list_operators(conn)
    return render(request, "operators.html", status_code, operators=found, **context)


@operator_pages.post("/operators")
async def add(request: Request, session: AdminDep) -> Response:
    console = state_of(request)
    form = await checked_form(request, session)
    # The role as one of accounts.ROLES (typed so), or None.
    role = next((r for r in accounts.ROLES if r == field(form, "role")), None)
    try:
        address = accounts.valid_address(field(form, "email"))
    except ValueError:
        return await _page(request, session, 422, error="operator_bad_email", draft=field(form, "email"))
    if role is None:
        return await _page(request, session, 422, error="operator_bad_role", draft=address)
    await record(request, session, "operator.added", f"console.operator:{address}")
    async with console.runtime.pool.acquire() as conn, conn.transaction():
        created = await accounts.add_operator(conn, address, role)
    if created is None:
        return await _page(request, session, 409, error="operator_exists", draft=address)
    return await _page(request, session, one_time=(address, created[1]), notice="operator_added")


async def _another_operator(request: Request, session: SessionRow, operator_id: uuid.UUID) -> OperatorRow | Response:
    """The account a disable or reset form names, once its CSRF token is checked; or the page saying why not:
    404 unknown, 409 one's own. (The last admin could lock everyone out by disabling themselves; one's own
    password is changed with the current one, /account/password, not reset.)"""
    await checked_form(request, session)
    async with state_of(request).runtime.pool.acquire() as conn:
        target = await store.operator_by_id(conn, operator_id)
    if target is None:
        return await _page(request, session, status.HTTP_404_NOT_FOUND, error="operator_not_found")
    if target.id == session.operator.id:
        return await _page(request, session, status.HTTP_409_CONFLICT, error="operator_not_self")
    return target


@operator_pages.post("/operators/{operator_id}/disable")
async def disable(request: Request, session: AdminDep, operator_id: uuid.UUID) -> Response:
    console = state_of(request)
    target = await _another_operator(request, session, operator_id)
    if not isinstance(target, OperatorRow):
        return target
    await record(request, session, "operator.disabled", f"console.operator:{target.email}")
    async with console.runtime.pool.acquire() as conn, conn.transaction():
        await store.disable_operator(conn, target.email)
    return await _page(request, session, notice="operator_disabled")


@operator_pages.post("/operators/{operator_id}/reset")
async def reset(request: Request, session: AdminDep, operator_id: uuid.UUID) -> Response:
    console = state_of(request)
    target = await _another_operator(request, session, operator_id)
    if not isinstance(target, OperatorRow):
        return target
    await record(request, session, "operator.password_reset", f"console.operator:{target.email}")
    async with console.runtime.pool.acquire() as conn, conn.transaction():
        password = await accounts.reset_password(conn, target.email)
    if password is None:
        return await _page(request, session, status.HTTP_404_NOT_FOUND, error="operator_not_found")
    return await _page(request, session, one_time=(target.email, password), notice="operator_reset")
