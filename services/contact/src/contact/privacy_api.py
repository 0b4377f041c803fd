"""HTTP routes of privacy requests: the person's form and confirmation page, and the operators' view.

The confirmation page is HTML for a person's browser (vi and en, no script); the same routes answer JSON to
a client that does not ask for HTML. Its URL holds the token: the page is never cached, never sends a
Referer, and may not be framed.
"""

from __future__ import annotations

import base64
import hashlib
import html
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, cast

import asyncpg
import orjson
from fastapi import APIRouter, Header, HTTPException, Query, Request, Response, status
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import Gauge
from pydantic import BaseModel
from spm_common import ratelimit
from spm_common.addresses import normalise_address
from spm_common.clientaddr import of_request, rate_limit_key
from spm_common.http import BAD_BODY, OPERATOR_ONLY, Operator, RuntimeDep, json_body, validated_body
from spm_common.privacy import ANSWERING_SERVICES, RequestKind
from spm_common.runtime import Runtime

from contact import privacy, privacy_store, store
from contact.intake import Locale, preferred_locale
from contact.privacy import (
    AlreadyConfirmed,
    BadToken,
    CannotExtend,
    ExpiredToken,
    ExtensionForm,
    PrivacyRequestForm,
    RequestNotFound,
)
from contact.settings import Settings

public = APIRouter(prefix="/v1", tags=["privacy requests"])
operators = APIRouter(prefix="/v1", tags=["privacy requests"], responses=OPERATOR_ONLY)
DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)
RETRY_AFTER_SECONDS = 5
RequestStatus = Literal["unconfirmed", "in-progress", "completed"]
LATE = Gauge(
    "spm_contact_privacy_requests_late",
    "Privacy requests in progress past half their deadline with some service yet to answer",
)
# The same answer for every accepted request, whoever the address belongs to.
ACCEPTED_BODY = b'{"status":"accepted","detail":"if the address is valid, a confirmation link was e-mailed to it"}'


class RequestAccepted(BaseModel):
    status: Literal["accepted"]
    detail: str


class ServiceAnswer(BaseModel):
    service: str
    summary: str
    counts: dict[str, int]
    answered_at: datetime


class PrivacyRequestView(BaseModel):
    id: uuid.UUID
    kind: RequestKind
    status: RequestStatus
    locale: Locale
    # Only while the request needs it: null once completed.
    email: str | None
    received_at: datetime
    acknowledged_at: datetime | None
    ack_due_at: datetime
    confirmed_at: datetime | None
    due_at: datetime
    extended_at: datetime | None
    extension_reason: str | None
    completed_at: datetime | None
    final_mail: Literal["queued", "sent", "failed"] | None
    answered: list[ServiceAnswer]
    waiting_for: list[str]
    # In progress past half its deadline with some service yet to answer; overdue: past the deadline itself.
    late: bool
    overdue: bool


class PrivacyRequestPage(BaseModel):
    items: list[PrivacyRequestView]


# FastAPI's own type for `responses=`.
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such request"}}
TOKEN_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Not a confirmation link this service issued (garbled, forged, or for something else)"},
    404: {"description": "No such request (an expired one is deleted)"},
    409: {"description": "The link was used already"},
    410: {"description": "The link expired"},
}


# --- the person ---------------------------------------------------------------------------------------------


@public.post(
    "/privacy-requests",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RequestAccepted,
    summary="Ask for one's personal data, or for its erasure; a confirmation link is e-mailed to the address",
    responses={
        **BAD_BODY,
        422: {"description": "Not a valid request; each bad field is named, its value never echoed"},
        429: {"description": "Too many requests from this client or for this address; see Retry-After"},
        503: {"description": "The database cannot be reached; try again (see Retry-After)"},
    },
    openapi_extra={"requestBody": json_body(PrivacyRequestForm)},
)
async def post_privacy_request(request: Request) -> Response:
    form = validated_body(PrivacyRequestForm, request.headers.get("content-type"), await request.body())
    runtime: Runtime = request.app.state.runtime
    settings = cast(Settings, runtime.settings)
    locale = preferred_locale(form.locale, request.headers.get("accept-language"))
    key = settings.client_key()
    now = datetime.now(UTC)
    # Counted per client and per address (any case), both known to the counters only as keyed hashes, in
    # buckets of their own (the contact form's are "c:..." and "*").
    counted = ratelimit.buckets(
        ratelimit.keyed("privacy-client", rate_limit_key(of_request(request, settings.trusted_proxies)), key),
        ratelimit.Limit(settings.privacy_rate_per_client, settings.privacy_rate_client_window_seconds),
        ratelimit.Limit(settings.privacy_rate_per_address, settings.privacy_rate_address_window_seconds),
        now.timestamp(),
        overall_bucket=ratelimit.keyed("privacy-address", normalise_address(form.email), key),
    )
    try:
        async with runtime.pool.acquire() as conn:
            [admission] = await store.admit(conn, [(counted, now)])
            decision = ratelimit.decide(counted, admission.client_hits, admission.global_hits, now.timestamp())
            if decision.allowed:
                async with conn.transaction():
                    await privacy.new_request(conn, form, locale, settings)
    except DB_ERRORS:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "the request could not be recorded now; please try again shortly",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        ) from None
    if not decision.allowed:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "too many requests; please try again later",
            headers={"Retry-After": str(decision.retry_after)},
        )
    return Response(ACCEPTED_BODY, status.HTTP_202_ACCEPTED, media_type="application/json")


@public.get(
    "/privacy-requests/confirm",
    summary="The confirmation page of a privacy request: what will happen, and a button",
    response_class=HTMLResponse,
    responses={200: {"content": {"application/json": {}}}, **TOKEN_ERRORS},
)
async def show_confirmation(
    runtime: RuntimeDep,
    token: Annotated[str, Query(max_length=200)],
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    settings = cast(Settings, runtime.settings)
    async with runtime.pool.acquire() as conn:
        try:
            row = await privacy.pending(conn, token, settings)
        except (BadToken, ExpiredToken, RequestNotFound, AlreadyConfirmed) as exc:
            return _token_problem(exc, accept)
    if not _wants_html(accept):
        return JSONResponse({"status": "unconfirmed", "kind": row["kind"], "due_at": row["due_at"].isoformat()})
    return _page(_confirm_page(row["kind"], row["locale"], token), status.HTTP_200_OK)


@public.post(
    "/privacy-requests/confirm",
    summary="Confirm a privacy request (the form of the confirmation page); every service is then asked",
    response_class=HTMLResponse,
    responses={200: {"content": {"application/json": {}}}, **TOKEN_ERRORS},
)
async def confirm_request(
    runtime: RuntimeDep,
    token: Annotated[str, Query(max_length=200)],
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    settings = cast(Settings, runtime.settings)
    try:
        async with runtime.pool.acquire() as conn, conn.transaction():
            row = await privacy.confirm(conn, token, settings)
    except (BadToken, ExpiredToken, RequestNotFound, AlreadyConfirmed) as exc:
        return _token_problem(exc, accept)
    if not _wants_html(accept):
        return JSONResponse({"status": "in-progress", "kind": row["kind"], "due_at": row["due_at"].isoformat()})
    return _page(_confirmed_page(row["kind"], row["locale"], privacy.local_date(row["due_at"])), status.HTTP_200_OK)


def _wants_html(accept: str | None) -> bool:
    return "text/html" in (accept or "")


_PROBLEMS: dict[type[Exception], tuple[int, str, str, str]] = {
    BadToken: (
        status.HTTP_400_BAD_REQUEST,
        "not a confirmation link this service issued",
        "Liên kết này không hợp lệ.",
        "This link is not valid.",
    ),
    ExpiredToken: (
        status.HTTP_410_GONE,
        "the confirmation link expired; make the request again",
        "Liên kết đã hết hạn. Hãy gửi lại yêu cầu.",
        "This link has expired. Please make the request again.",
    ),
    RequestNotFound: (
        status.HTTP_404_NOT_FOUND,
        "no such request; make the request again",
        "Không tìm thấy yêu cầu này. Hãy gửi lại yêu cầu.",
        "There is no such request. Please make the request again.",
    ),
    AlreadyConfirmed: (
        status.HTTP_409_CONFLICT,
        "the confirmation link was used already",
        "Yêu cầu này đã được xác nhận rồi.",
        "This request was confirmed already.",
    ),
}


def _token_problem(exc: Exception, accept: str | None) -> Response:
    code, detail, vi, en = _PROBLEMS[type(exc)]
    if not _wants_html(accept):
        return JSONResponse({"detail": detail}, status_code=code)
    return _page(_notice_page(vi, en), code)


# --- the pages: plain HTML, both languages, the person's first; no script, one hashed style ---------------------

_STYLE = (
    "body{font-family:Arial,Helvetica,sans-serif;color:#1f2933;line-height:1.5;max-width:40rem;margin:2rem auto;"
    "padding:0 1rem}section{margin-bottom:2rem}button{font-size:1rem;padding:.6rem 1.2rem}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; frame-ancestors 'none';"
        " base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_WHAT = {
    ("access", "vi"): (
        "Xác nhận yêu cầu xem dữ liệu cá nhân",
        "Khi bạn xác nhận, mọi hệ thống của SPM Group sẽ tìm dữ liệu cá nhân gắn với địa chỉ e-mail này. "
        "Bạn sẽ nhận được một thư tóm tắt, kèm tệp personal-data.json chứa toàn bộ dữ liệu đó.",
        "Xác nhận",
    ),
    ("access", "en"): (
        "Confirm your request for your personal data",
        "When you confirm, every system of SPM Group looks for the personal data linked to this e-mail address. "
        "You will receive one e-mail with a summary and the file personal-data.json holding all of it.",
        "Confirm",
    ),
    ("erasure", "vi"): (
        "Xác nhận yêu cầu xóa dữ liệu cá nhân",
        "Khi bạn xác nhận, mọi hệ thống của SPM Group sẽ xóa dữ liệu cá nhân gắn với địa chỉ e-mail này, trừ "
        "những gì pháp luật buộc chúng tôi giữ lại (ví dụ số tiền và ngày của đơn hàng, không kèm tên hay địa chỉ). "
        "Việc xóa không thể hoàn tác. Bạn sẽ nhận được một thư cuối cùng cho biết những gì đã xóa và đã giữ lại.",
        "Xác nhận xóa",
    ),
    ("erasure", "en"): (
        "Confirm your request to erase your personal data",
        "When you confirm, every system of SPM Group erases the personal data linked to this e-mail address, "
        "except what the law makes us keep (an order's amounts and date, for instance, without your name or "
        "address). Erasure cannot be undone. You will receive one last e-mail saying what was erased and what "
        "was kept.",
        "Confirm erasure",
    ),
}


def _in_order(locale: str) -> tuple[str, str]:
    return ("vi", "en") if locale == "vi" else ("en", "vi")


def _confirm_page(kind: str, locale: str, token: str) -> str:
    sections = []
    for lang in _in_order(locale):
        title, what, _ = _WHAT[(kind, lang)]
        sections.append(f'<section lang="{lang}"><h1>{html.escape(title)}</h1><p>{html.escape(what)}</p></section>')
    _, _, vi_button = _WHAT[(kind, "vi")]
    _, _, en_button = _WHAT[(kind, "en")]
    # The form posts back to this very URL, token included: a relative action keeps any path prefix of a proxy.
    form = (
        f'<form method="post" action="?token={html.escape(token)}">'
        f'<button type="submit">{html.escape(vi_button)} / {html.escape(en_button)}</button></form>'
    )
    return _document(locale, _WHAT[(kind, locale)][0], "".join(sections) + form)


def _confirmed_page(kind: str, locale: str, due_date: str) -> str:
    texts = {
        "vi": ("Đã xác nhận", f"Cảm ơn bạn. Chúng tôi sẽ trả lời qua e-mail trước ngày {due_date}."),
        "en": ("Confirmed", f"Thank you. We will answer by e-mail by {due_date}."),
    }
    sections = [
        f'<section lang="{lang}"><h1>{html.escape(texts[lang][0])}</h1><p>{html.escape(texts[lang][1])}</p></section>'
        for lang in _in_order(locale)
    ]
    return _document(locale, texts[locale][0], "".join(sections))


def _notice_page(vi: str, en: str) -> str:
    body = f'<section lang="vi"><p>{html.escape(vi)}</p></section><section lang="en"><p>{html.escape(en)}</p></section>'
    return _document("vi", "SPM Group", body)


def _document(locale: str, title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html><html lang="{locale}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width"><meta name="robots" content="noindex">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def _page(document: str, code: int) -> HTMLResponse:
    return HTMLResponse(document, status_code=code, headers=_SECURITY_HEADERS)


# --- the operators ------------------------------------------------------------------------------------------


@operators.get("/privacy-requests", response_model=PrivacyRequestPage, summary="Privacy requests, newest first")
async def list_privacy_requests(
    _: Operator,
    runtime: RuntimeDep,
    status_: Annotated[RequestStatus | None, Query(alias="status")] = None,
    late: Annotated[bool, Query(description="only the late ones")] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> PrivacyRequestPage:
    now = datetime.now(UTC)
    async with runtime.pool.acquire() as conn:
        rows = await privacy_store.list_requests(conn, status_, late, now, len(ANSWERING_SERVICES), limit)
        answers = await privacy_store.answers_of(conn, [r["id"] for r in rows])
    return PrivacyRequestPage(items=_views(rows, answers, now))


@operators.get(
    "/privacy-requests/{request_id}",
    response_model=PrivacyRequestView,
    summary="One privacy request: its times, and which services have answered",
    responses=NOT_FOUND,
)
async def get_privacy_request(_: Operator, runtime: RuntimeDep, request_id: uuid.UUID) -> PrivacyRequestView:
    return await _view(runtime.pool, request_id)


@operators.post(
    "/privacy-requests/{request_id}/extension",
    response_model=PrivacyRequestView,
    summary="Extend the deadline once, with a reason; the person is told by e-mail",
    responses={**NOT_FOUND, **BAD_BODY, 409: {"description": "Extended already, or not in progress"}},
)
async def extend_privacy_request(
    _: Operator, runtime: RuntimeDep, request_id: uuid.UUID, form: ExtensionForm
) -> PrivacyRequestView:
    settings = cast(Settings, runtime.settings)
    try:
        async with runtime.pool.acquire() as conn, conn.transaction():
            await privacy.extend(conn, request_id, form.reason, settings)
    except RequestNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "privacy request not found") from None
    except CannotExtend as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    return await _view(runtime.pool, request_id)


async def _view(pool: asyncpg.Pool, request_id: uuid.UUID) -> PrivacyRequestView:
    async with pool.acquire() as conn:
        row = await privacy_store.get_request(conn, request_id)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "privacy request not found")
        answers = await privacy_store.answers_of(conn, [request_id])
    return _views([row], answers, datetime.now(UTC))[0]


def _views(rows: list[asyncpg.Record], answers: list[asyncpg.Record], now: datetime) -> list[PrivacyRequestView]:
    by_request: dict[uuid.UUID, list[ServiceAnswer]] = {}
    for a in answers:
        by_request.setdefault(a["request_id"], []).append(
            ServiceAnswer(
                service=a["service"],
                summary=a["summary"],
                counts=orjson.loads(a["counts"]),
                answered_at=a["answered_at"],
            )
        )
    views = []
    for row in rows:
        answered = by_request.get(row["id"], [])
        done = {a.service for a in answered}
        views.append(
            PrivacyRequestView(
                id=row["id"],
                kind=row["kind"],
                status=row["status"],
                locale=row["locale"],
                email=row["email"],
                received_at=row["received_at"],
                acknowledged_at=row["acknowledged_at"],
                ack_due_at=row["ack_due_at"],
                confirmed_at=row["confirmed_at"],
                due_at=row["due_at"],
                extended_at=row["extended_at"],
                extension_reason=row["extension_reason"],
                completed_at=row["completed_at"],
                final_mail=row["final_mail"],
                answered=answered,
                waiting_for=[s for s in ANSWERING_SERVICES if s not in done] if row["status"] == "in-progress" else [],
                late=privacy.is_late(row["status"], row["received_at"], row["due_at"], len(done), now),
                overdue=row["status"] != "completed" and row["confirmed_at"] is not None and now > row["due_at"],
            )
        )
    return views


async def refresh_gauges(runtime: Runtime) -> None:
    """The late requests' gauge, from the table (a scrape hook of /metrics)."""
    async with runtime.pool.acquire() as conn:
        LATE.set(await privacy_store.count_late(conn, datetime.now(UTC), len(ANSWERING_SERVICES)))
