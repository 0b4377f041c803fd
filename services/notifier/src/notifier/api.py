"""HTTP routes of the notifier: one-click unsubscribe for recipients; the delivery log and the suppression list
for operators."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, cast

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request, status
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field, StringConstraints
from spm_common.http import BAD_BODY, OPERATOR_ONLY, Operator, RuntimeDep
from spm_common.inputs import DbBigInt

from notifier import store
from notifier.settings import Settings
from notifier.tokens import InvalidToken, read_token
from notifier.unsubscribe import page, unsubscribe

router = APIRouter(prefix="/v1")
Token = Annotated[str, Query(min_length=10, max_length=2000, description="the token from the e-mail's link")]
# The pages must not leak the token (it names the address) to anything they might load or link to.
PAGE_HEADERS = {"Referrer-Policy": "no-referrer", "Cache-Control": "no-store", "X-Robots-Tag": "noindex"}


# The console names the operator who acts; the notifier keeps it with the change.
ActingOperator = Annotated[
    str | None,
    Header(
        alias="X-SPM-Operator",
        max_length=320,
        description="the operator acting (the console sends the operator's account); recorded with the change",
    ),
]
# A recipient reference is the hex keyed hash of an address (see tokens.recipient_ref).
RecipientRef = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[0-9a-f]+$")]


class Unsubscribed(BaseModel):
    status: Literal["unsubscribed"] = "unsubscribed"
    category: Literal["upgrades", "news"]


class Delivery(BaseModel):
    id: int
    request_event_id: str
    recipient_ref: str
    purpose: str
    template: str
    locale: str
    reference: str | None
    status: str
    attempts: int
    last_error: str | None
    operator_retries: int
    retried_by: str | None
    retryable: bool
    created_at: datetime
    last_attempt_at: datetime | None
    next_attempt_at: datetime
    sent_at: datetime | None
    failed_at: datetime | None


class Retried(BaseModel):
    retried: list[int]


class Suppression(BaseModel):
    recipient_ref: str
    suppressed_at: datetime
    suppressed_reason: str | None


class RemovalForm(BaseModel):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)] = Field(
        description="why mail to this recipient may go again"
    )


class Removed(BaseModel):
    recipient_ref: str
    removed: Literal[True] = True


def _settings(runtime: RuntimeDep) -> Settings:
    return cast(Settings, runtime.settings)


@router.get(
    "/unsubscribe",
    tags=["unsubscribe"],
    response_class=HTMLResponse,
    summary="The confirmation page of an unsubscribe link (Vietnamese and English)",
    responses={400: {"description": "the token is not valid", "content": {"text/html": {}}}},
)
async def unsubscribe_page(token: Token, runtime: RuntimeDep) -> HTMLResponse:
    try:
        _, category = read_token(token, _settings(runtime).recipient_key())
    except InvalidToken:
        return HTMLResponse(page("invalid"), status.HTTP_400_BAD_REQUEST, headers=PAGE_HEADERS)
    return HTMLResponse(page("confirm", category, token), headers=PAGE_HEADERS)


@router.post(
    "/unsubscribe",
    tags=["unsubscribe"],
    summary="Unsubscribe at once (RFC 8058 one-click, or the confirmation page's button)",
    response_model=Unsubscribed,
    responses={
        200: {"content": {"text/html": {}}, "description": "JSON, or a page when the browser asks for HTML"},
        400: {"description": "the token is not valid"},
        413: BAD_BODY[413],
    },
)
async def unsubscribe_now(token: Token, request: Request, runtime: RuntimeDep) -> Response:
    wants_html = "text/html" in request.headers.get("accept", "")
    settings = _settings(runtime)
    try:
        email, category = read_token(token, settings.recipient_key())
    except InvalidToken:
        if wants_html:
            return HTMLResponse(page("invalid"), status.HTTP_400_BAD_REQUEST, headers=PAGE_HEADERS)
        return JSONResponse({"detail": "invalid unsubscribe token"}, status.HTTP_400_BAD_REQUEST)
    async with runtime.pool.acquire() as conn, conn.transaction():
        await unsubscribe(conn, email, category, settings)
    if wants_html:
        return HTMLResponse(page("done", category), headers=PAGE_HEADERS)
    return JSONResponse(Unsubscribed(category=category).model_dump(), headers=PAGE_HEADERS)


@router.get(
    "/deliveries", tags=["deliveries"], summary="The delivery log (failed ones by default)", responses=OPERATOR_ONLY
)
async def list_deliveries(
    _: Operator,
    runtime: RuntimeDep,
    delivery_status: Annotated[
        Literal["pending", "sending", "sent", "failed"] | None, Query(alias="status")
    ] = "failed",
    after_id: Annotated[DbBigInt, Query(ge=0, description="page on: the last id of the previous page")] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before_id: Annotated[
        DbBigInt | None,
        Query(ge=1, description="newest first instead: the ids below this one (the last id of the previous page)"),
    ] = None,
) -> list[Delivery]:
    async with runtime.pool.acquire() as conn:
        if before_id is None:
            rows = await store.list_deliveries(conn, delivery_status, after_id, limit)
        else:
            rows = await store.list_newest_deliveries(conn, delivery_status, before_id, limit)
    return [Delivery.model_validate(row) for row in rows]


@router.post(
    "/deliveries/retry",
    tags=["deliveries"],
    summary="Retry every failed delivery that still holds its request",
    responses=OPERATOR_ONLY,
)
async def retry_all(_: Operator, runtime: RuntimeDep, operator: ActingOperator = None) -> Retried:
    async with runtime.pool.acquire() as conn, conn.transaction():
        retried = await store.retry_failed(conn, None, operator)
        await store.notify_due(conn)
    return Retried(retried=retried)


@router.post(
    "/deliveries/{delivery_id}/retry",
    tags=["deliveries"],
    summary="Retry one failed delivery",
    responses={
        **OPERATOR_ONLY,
        404: {"description": "no such delivery"},
        409: {"description": "not failed, or not retryable"},
    },
)
async def retry_one(
    delivery_id: DbBigInt, _: Operator, runtime: RuntimeDep, operator: ActingOperator = None
) -> Delivery:
    async with runtime.pool.acquire() as conn, conn.transaction():
        retried = await store.retry_failed(conn, delivery_id, operator)
        row = await store.delivery_status(conn, delivery_id)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such delivery")
        if not retried:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                "only a failed delivery that still holds its request can be retried",
            )
        await store.notify_due(conn)
    return Delivery.model_validate(dict(row))


@router.get(
    "/suppressions",
    tags=["suppressions"],
    summary="Recipients suppressed after a hard bounce, by reference (no address is kept)",
    responses=OPERATOR_ONLY,
)
async def list_suppressions(
    _: Operator,
    runtime: RuntimeDep,
    after: Annotated[str, Query(max_length=128, description="page on: the last reference of the previous page")] = "",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[Suppression]:
    async with runtime.pool.acquire() as conn:
        rows = await store.list_suppressions(conn, after, limit)
    return [Suppression.model_validate(dict(row)) for row in rows]


@router.post(
    "/suppressions/{recipient_ref}/remove",
    tags=["suppressions"],
    summary="Lift a suppression, with a reason; the operator, time and reason are kept",
    responses={**OPERATOR_ONLY, **BAD_BODY, 404: {"description": "that recipient is not suppressed"}},
)
async def remove_suppression(
    recipient_ref: RecipientRef,
    form: RemovalForm,
    _: Operator,
    runtime: RuntimeDep,
    operator: ActingOperator = None,
) -> Removed:
    async with runtime.pool.acquire() as conn:
        lifted = await store.remove_suppression(conn, recipient_ref, operator, form.reason)
    if not lifted:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "that recipient is not suppressed")
    return Removed(recipient_ref=recipient_ref)
