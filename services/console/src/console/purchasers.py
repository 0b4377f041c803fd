"""The purchaser page: one buyer's orders, consent to news and unsubscribes, and resending their license keys.

Everything comes from the orders service's operator API (`GET /v1/purchasers`, `GET /v1/orders`): its consent
and unsubscribe state is the one its fan-outs obey (kept from the notifier's unsubscribe events), so the page
shows what the next news or upgrade e-mail will do. Resending keys asks the orders service for the
license-recovery e-mail (through its outbox, to the notifier), naming the operator; the form carries a request
id of its own, so a double click sends one e-mail. As everywhere, the view and the action are recorded
(`operator.action`, target `orders.purchaser:<address>`, which files them under that person) before they
happen.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import Response

from console.api import OperatorDep, checked_form, field, record, render, see_other, state_of
from console.store import SessionRow
from console.upstream import UpstreamError

purchaser_pages = APIRouter(include_in_schema=False)
NOTICES = ("keys_resent", "keys_resent_before")
MAX_EMAIL = 254


def purchaser_url(email: str, **params: str) -> str:
    return "/purchasers?" + urlencode({"email": email, **params})


@purchaser_pages.get("/purchasers")
async def purchaser(
    request: Request,
    session: OperatorDep,
    email: Annotated[str, Query(min_length=1, max_length=MAX_EMAIL)],
    notice: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    return await _purchaser_page(request, session, email.strip(), notice=notice if notice in NOTICES else None)


async def _purchaser_page(
    request: Request, session: SessionRow, email: str, status_code: int = 200, **context: Any
) -> Response:
    console = state_of(request)
    operator = session.operator.email
    await record(request, session, "purchaser.viewed", f"orders.purchaser:{email}")
    try:
        found = await console.orders.purchaser(operator, email)
    except UpstreamError as exc:
        if exc.status not in (status.HTTP_404_NOT_FOUND, status.HTTP_422_UNPROCESSABLE_CONTENT):
            raise
        error = "no_purchaser" if exc.status == status.HTTP_404_NOT_FOUND else "orders_bad_query"
        return render(request, "purchaser.html", exc.status, purchaser=None, email=email, error=error)
    orders = await console.orders.search(operator, email=found.email)
    return render(
        request,
        "purchaser.html",
        status_code,
        purchaser=found,
        email=found.email,
        orders=orders,
        # A new id each time the form is shown: sending this form twice sends one e-mail.
        request_id=uuid.uuid4(),
        **context,
    )


@purchaser_pages.post("/purchasers/resend-keys")
async def resend_keys(request: Request, session: OperatorDep) -> Response:
    console = state_of(request)
    form = await checked_form(request, session)
    email = field(form, "email").strip()[:MAX_EMAIL]
    try:
        request_id = uuid.UUID(field(form, "request_id"))
    except ValueError:
        request_id = None
    if not email or request_id is None:
        return render(request, "error.html", 422, title="bad_request_title", message="resend_bad_form")
    await record(request, session, "license_keys.resent", f"orders.purchaser:{email}")
    try:
        resent = await console.orders.resend_keys(session.operator.email, email, request_id)
    except UpstreamError as exc:
        if exc.status == status.HTTP_429_TOO_MANY_REQUESTS:
            return await _purchaser_page(request, session, email, 429, error="resend_limited")
        if exc.status != status.HTTP_409_CONFLICT:
            raise
        return await _purchaser_page(request, session, email, 409, error="resend_refused")
    return see_other(purchaser_url(email, notice="keys_resent_before" if resent.duplicate else "keys_resent"))
