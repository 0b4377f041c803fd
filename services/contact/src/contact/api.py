"""HTTP routes of the contact service: the website's form and policy, and the operators' inbox."""

from __future__ import annotations

import asyncio
import base64
import binascii
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, cast

import asyncpg
from email_validator import EmailNotValidError, validate_email
from fastapi import APIRouter, Header, HTTPException, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from spm_common import ratelimit
from spm_common.clientaddr import of_request, rate_limit_key
from spm_common.db import DB_ERRORS
from spm_common.http import BAD_BODY, OPERATOR_ONLY, Operator, RuntimeDep, direct, json_body, validated_body
from spm_common.runtime import Runtime

from contact import inbox, store
from contact.inbox import MessageIsClosed, MessageNotFound, ReplyForm
from contact.intake import ContactForm, Locale, new_message, preferred_locale
from contact.settings import Settings
from contact.writer import MessageWriter

public = APIRouter(prefix="/v1", tags=["website"])
operators = APIRouter(prefix="/v1", tags=["inbox"], responses=OPERATOR_ONLY)
RETRY_AFTER_SECONDS = 5

DeliveryStatus = Literal["queued", "sent", "failed"]
MessageStatus = Literal["new", "answered", "closed"]
# FastAPI's own type for `responses=`.
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such message"}}
# The console names the operator who acts; the inbox records who replied and who closed.
ActingOperator = Annotated[
    str | None,
    Header(
        alias="X-SPM-Operator",
        max_length=320,
        description="the operator acting (the console sends the operator's account); recorded with the change",
    ),
]


class Accepted(BaseModel):
    id: str


class Delivery(BaseModel):
    status: DeliveryStatus
    error: str | None = None
    updated_at: datetime | None = None


class MessageSummary(BaseModel):
    id: uuid.UUID
    name: str
    email: str
    subject: str | None
    locale: Locale
    status: MessageStatus
    received_at: datetime
    closed_at: datetime | None
    closed_by: str | None = None
    privacy_policy_version: int | None
    acknowledgement: Delivery
    reply_count: int


class Reply(BaseModel):
    id: uuid.UUID
    body: str
    created_at: datetime
    delivery: Delivery
    replied_by: str | None = None


class MessageDetail(MessageSummary):
    body: str
    replies: list[Reply]


class MessagePage(BaseModel):
    items: list[MessageSummary]
    next_cursor: str | None = None


class ReplyAccepted(BaseModel):
    id: uuid.UUID
    message_id: uuid.UUID
    created_at: datetime
    delivery: Delivery


class PrivacyPolicy(BaseModel):
    version: int
    lang: Locale
    text: str
    effective_from: datetime
    published_at: datetime
    sha256: str


# The website


@public.post(
    "/messages",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    summary="Receive a message from the website's contact form",
    responses={
        **BAD_BODY,
        422: {"description": "The body is not a valid message; each bad field is named, its value never echoed"},
        429: {"description": "Too many messages from this client or in all; see Retry-After"},
        503: {"description": "The database cannot be reached; the form may be sent again (see Retry-After)"},
    },
    openapi_extra={
        "requestBody": json_body(ContactForm),
        "parameters": [
            {
                "name": "Accept-Language",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "the acknowledgement's language where the form names no locale (vi or en)",
            }
        ],
    },
)
@direct()
async def post_message(request: Request) -> Response:
    # The body is validated here, with the same model and the same 422 as a declared body would be.
    form = validated_body(ContactForm, request.headers.get("content-type"), await request.body())
    if form.is_spam:
        # The bot is told what a person would be told, and nothing is stored or sent.
        return _accepted(uuid.uuid4())
    runtime: Runtime = request.app.state.runtime
    settings = cast(Settings, runtime.settings)
    if settings.contact_check_email_domain and not await _domain_exists(form.email):
        return JSONResponse(
            {
                "detail": [
                    {"loc": ["body", "email"], "msg": "the address's domain does not accept mail", "type": "email"}
                ]
            },
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    message = new_message(
        form, preferred_locale(form.locale, request.headers.get("accept-language")), settings.mail_from
    )
    counted = ratelimit.buckets(
        ratelimit.keyed("c", rate_limit_key(of_request(request, settings.trusted_proxies)), settings.client_key()),
        ratelimit.Limit(settings.contact_rate_per_client, settings.contact_rate_client_window_seconds),
        ratelimit.Limit(settings.contact_rate_global, settings.contact_rate_global_window_seconds),
        message.received_at.timestamp(),
    )
    try:
        # Counted and, if within the limits, stored, together with the messages arriving at the same time.
        writer: MessageWriter = request.app.state.writer
        decision = await writer.store(message, counted)
    except DB_ERRORS:
        # The database went away, perhaps mid-write: the message may or may not be stored, which only a 503
        # says (a 500 said nothing). The form may be sent again; at worst the operators see it twice.
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "the message could not be stored now; please try again shortly",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        ) from None
    if not decision.allowed:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "too many messages; please try again later",
            headers={"Retry-After": str(decision.retry_after)},
        )
    return _accepted(message.id)


def _accepted(message_id: uuid.UUID) -> Response:
    return Response(f'{{"id":"{message_id}"}}', status.HTTP_202_ACCEPTED, media_type="application/json")


async def _domain_exists(address: str) -> bool:
    def check() -> bool:
        try:
            validate_email(address, check_deliverability=True, timeout=3)
        except EmailNotValidError:
            return False
        return True

    return await asyncio.to_thread(check)


@public.get(
    "/privacy-policy",
    response_model=PrivacyPolicy,
    summary="The privacy policy in force, or the version asked for",
    responses={404: {"description": "No such version (or none published yet)"}},
)
async def get_privacy_policy(
    runtime: RuntimeDep,
    response: Response,
    lang: Annotated[Locale | None, Query(description="vi or en; else from Accept-Language, else en")] = None,
    version: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
    accept_language: Annotated[str | None, Header()] = None,
) -> PrivacyPolicy:
    language = preferred_locale(lang, accept_language)
    async with runtime.pool.acquire() as conn:
        row = await store.get_policy(conn, version)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such privacy policy version")
    response.headers["Content-Language"] = language
    # A numbered version never changes; "the one in force" may, when a new version takes effect.
    response.headers["Cache-Control"] = "public, max-age=86400" if version else "public, max-age=300"
    response.headers["Vary"] = "Accept-Language"
    return PrivacyPolicy(
        version=row["version"],
        lang=language,
        text=row[f"text_{language}"],
        effective_from=row["effective_from"],
        published_at=row["published_at"],
        sha256=row["sha256"],
    )


# The operators' inbox


@operators.get("/messages", response_model=MessagePage, summary="The inbox, newest first")
async def list_messages(
    _: Operator,
    runtime: RuntimeDep,
    status_: Annotated[MessageStatus | None, Query(alias="status")] = None,
    state: Annotated[
        Literal["open", "closed"] | None, Query(description="open: new or answered; closed: closed")
    ] = None,
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="text in name, address, subject or body, insensitive to case and diacritics",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200, description="next_cursor of the previous page")] = None,
) -> MessagePage:
    before = _decode_cursor(cursor) if cursor else None
    async with runtime.pool.acquire() as conn:
        rows = await store.list_messages(conn, status=status_, state=state, text=q, before=before, limit=limit + 1)
    items = [_summary(row) for row in rows[:limit]]
    next_cursor = _encode_cursor(items[-1].received_at, items[-1].id) if len(rows) > limit else None
    return MessagePage(items=items, next_cursor=next_cursor)


@operators.get(
    "/messages/{message_id}", response_model=MessageDetail, summary="One message with its replies", responses=NOT_FOUND
)
async def get_message(_: Operator, runtime: RuntimeDep, message_id: uuid.UUID) -> MessageDetail:
    return await _detail(runtime.pool, message_id)


@operators.post(
    "/messages/{message_id}/close", response_model=MessageDetail, summary="Close a message", responses=NOT_FOUND
)
async def close_message(
    _: Operator, runtime: RuntimeDep, message_id: uuid.UUID, operator: ActingOperator = None
) -> MessageDetail:
    async with runtime.pool.acquire() as conn, conn.transaction():
        try:
            await inbox.close(conn, message_id, runtime.settings.source, operator)
        except MessageNotFound:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "message not found") from None
    return await _detail(runtime.pool, message_id)


@operators.post(
    "/messages/{message_id}/reopen",
    response_model=MessageDetail,
    summary="Open a closed message again, so it can be answered",
    responses=NOT_FOUND,
)
async def reopen_message(_: Operator, runtime: RuntimeDep, message_id: uuid.UUID) -> MessageDetail:
    async with runtime.pool.acquire() as conn, conn.transaction():
        try:
            await inbox.reopen(conn, message_id, runtime.settings.source)
        except MessageNotFound:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "message not found") from None
    return await _detail(runtime.pool, message_id)


@operators.post(
    "/messages/{message_id}/replies",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ReplyAccepted,
    summary="Reply to a message; the notifier e-mails it to the sender, threaded under the acknowledgement",
    responses={**NOT_FOUND, **BAD_BODY, 409: {"description": "The message is closed"}},
)
async def post_reply(
    _: Operator, runtime: RuntimeDep, message_id: uuid.UUID, form: ReplyForm, operator: ActingOperator = None
) -> ReplyAccepted:
    settings = runtime.settings
    async with runtime.pool.acquire() as conn, conn.transaction():
        try:
            reply = await inbox.reply(conn, message_id, form.body, settings.mail_from, settings.source, operator)
        except MessageNotFound:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "message not found") from None
        except MessageIsClosed:
            raise HTTPException(status.HTTP_409_CONFLICT, "the message is closed") from None
    return ReplyAccepted(
        id=reply.id, message_id=reply.message_id, created_at=reply.created_at, delivery=Delivery(status="queued")
    )


async def _detail(pool: asyncpg.Pool, message_id: uuid.UUID) -> MessageDetail:
    async with pool.acquire() as conn:
        row = await store.get_message(conn, message_id)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "message not found")
        replies = await store.replies_of(conn, message_id)
    return MessageDetail(
        **_summary(row).model_dump(),
        body=row["body"],
        replies=[
            Reply(
                id=r["id"],
                body=r["body"],
                created_at=r["created_at"],
                delivery=Delivery(
                    status=r["delivery_status"], error=r["delivery_error"], updated_at=r["delivery_updated_at"]
                ),
                replied_by=r["replied_by"],
            )
            for r in replies
        ],
    )


def _summary(row: asyncpg.Record) -> MessageSummary:
    return MessageSummary(
        id=row["id"],
        name=row["name"],
        email=row["email"],
        subject=row["subject"],
        locale=row["locale"],
        status=row["status"],
        received_at=row["received_at"],
        closed_at=row["closed_at"],
        closed_by=row["closed_by"],
        privacy_policy_version=row["policy_version"],
        acknowledgement=Delivery(status=row["ack_status"], error=row["ack_error"]),
        reply_count=row["reply_count"],
    )


def _encode_cursor(received_at: datetime, message_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{received_at.isoformat()}|{message_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, _, ident = raw.partition("|")
        received_at = datetime.fromisoformat(when)
        if received_at.tzinfo is None:
            raise ValueError("naive time")
        return received_at, uuid.UUID(ident)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [{"loc": ["query", "cursor"], "msg": "not a cursor this service issued", "type": "value_error"}],
        ) from None
