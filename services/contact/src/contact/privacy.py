"""Privacy requests (CONTRACT section 6): a person asks, by e-mail, for their data or for its erasure.

1. `POST /v1/privacy-requests` records an unconfirmed request and e-mails a signed, single-use, expiring link
   to the address; the answer is the same whether the address is known or not (nothing is looked up).
2. Following the link and pressing the button confirms it: in one transaction the request is in progress
   and `privacy.request.confirmed` is in the outbox, for every service to answer.
3. Each service's `privacy.request.completed` is recorded (its first answer only). When all of
   ANSWERING_SERVICES have answered, ONE e-mail is requested: for access a summary and `personal-data.json`
   (one section per service), for erasure what was erased and what is kept and why. In the same transaction
   the request drops the address and every answer its export; a periodic sweep then deletes the request's
   published outbox rows, the last copies of the address and the export in this service.

Times: received = the request was made (the deadlines run from there: the stricter reading); acknowledged =
the notifier reports the confirmation e-mail sent (the person has been told the request arrived and what
happens next); the acknowledgement is due within SPM_PRIVACY_ACK_WORKING_DAYS working days, the answer
within SPM_PRIVACY_DUE_DAYS calendar days, moved once by SPM_PRIVACY_EXTENSION_DAYS with a reason.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import struct
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Annotated, Any

import asyncpg
import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from spm_common import outbox
from spm_common.consumer import PermanentError
from spm_common.db import Connection
from spm_common.envelope import CloudEvent, Purpose, new_event
from spm_common.handlers import Meta
from spm_common.health import LoopHealth
from spm_common.logging import get_logger
from spm_common.notifications import (
    ATTACHMENTS_MAX_BYTES,
    NOTIFICATION_REQUESTED,
    Attachment,
    NotificationOutcome,
    NotificationRequested,
    Recipient,
)
from spm_common.privacy import (
    ANSWERING_SERVICES,
    PRIVACY_REQUEST_COMPLETED,
    PRIVACY_REQUEST_CONFIRMED,
    PrivacyRequestCompleted,
    PrivacyRequestConfirmed,
    RequestKind,
)
from spm_common.redaction import describe_error

from contact import privacy_store as store
from contact.intake import EMAIL_MAX, Locale, clean_text, valid_email
from contact.settings import Settings

PURPOSE: Purpose = "privacy-request"
CONFIRM_REFERENCE = "privacy.confirm:"
FINAL_REFERENCE = "privacy.final:"
EXTENSION_REFERENCE = "privacy.extension:"
ATTACHMENT_NAME = "personal-data.json"
REASON_MAX = 2000
# Working days are counted on Vietnam's calendar (UTC+7 all year, no daylight saving time).
LOCAL_TIME = timezone(timedelta(hours=7), "ICT")
# How a service is named to the person, in their language.
SERVICE_LABELS: dict[str, dict[str, str]] = {
    "contact": {"vi": "Tin nhắn liên hệ", "en": "Contact messages"},
    "orders": {"vi": "Đơn hàng và giấy phép", "en": "Orders and licenses"},
    "notifier": {"vi": "Thư điện tử đã gửi", "en": "E-mails sent"},
    "audit": {"vi": "Nhật ký kiểm toán", "en": "Audit trail"},
}
log = get_logger(__name__)


# --- what a person sends ----------------------------------------------------------------------------------


class PrivacyRequestForm(BaseModel):
    """What the website's privacy request form sends."""

    model_config = ConfigDict(extra="ignore")

    email: Annotated[str, Field(min_length=3, max_length=EMAIL_MAX), AfterValidator(valid_email)]
    kind: RequestKind
    locale: Locale | None = None


def _reason(text: str) -> str:
    text = clean_text(text, REASON_MAX)
    if not text:
        raise ValueError("must not be empty")
    return text


class ExtensionForm(BaseModel):
    """An operator's one extension of a request's deadline; the reason is e-mailed to the person."""

    reason: Annotated[str, Field(min_length=1, max_length=REASON_MAX), AfterValidator(_reason)]


# --- the confirmation link --------------------------------------------------------------------------------

# Signed into every token: a token made for anything else never confirms a request.
TOKEN_PURPOSE = "pr1"  # noqa: S105 (a label, not a secret)
_PAYLOAD = struct.Struct(">16sQ")  # request id, expiry (unix seconds)


class BadToken(ValueError):
    """Not a confirmation link this service issued (garbled, forged, or made for something else)."""


class ExpiredToken(ValueError):
    pass


def token_key(settings: Settings) -> bytes:
    # A key of its own, derived from the service's secret: a rate-limit bucket name is never a valid signature.
    return hmac.digest(settings.client_key(), b"privacy-request-token", "sha256")


def make_token(request_id: uuid.UUID, expires_at: datetime, key: bytes, purpose: str = TOKEN_PURPOSE) -> str:
    payload = _b64(_PAYLOAD.pack(request_id.bytes, int(expires_at.timestamp())))
    return f"{purpose}.{payload}.{_b64(_signature(purpose, payload, key))}"


def read_token(token: str, key: bytes, now: datetime) -> uuid.UUID:
    """The request a token confirms; raises BadToken or ExpiredToken."""
    purpose, _, rest = token.partition(".")
    payload, _, signature = rest.partition(".")
    if len(token) > 200 or not payload or not signature:
        raise BadToken
    try:
        given = _unb64(signature)
        expected = _signature(purpose, payload, key)
        if purpose != TOKEN_PURPOSE or not hmac.compare_digest(given, expected):
            raise BadToken
        request_bytes, expires = _PAYLOAD.unpack(_unb64(payload))
    except (ValueError, binascii.Error, struct.error):
        raise BadToken from None
    if now.timestamp() >= expires:
        raise ExpiredToken
    return uuid.UUID(bytes=request_bytes)


def _signature(purpose: str, payload: str, key: bytes) -> bytes:
    return hmac.digest(key, f"{purpose}.{payload}".encode(), hashlib.sha256)[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- deadlines --------------------------------------------------------------------------------------------


def add_working_days(start: datetime, days: int, holidays: frozenset[date] | tuple[date, ...] = ()) -> datetime:
    """`start` moved on by `days` working days (Monday to Friday, not a holiday), same time of day, counted on
    Vietnam's calendar: a request made on Friday with 2 working days is due on Tuesday."""
    local = start.astimezone(LOCAL_TIME)
    added = 0
    while added < days:
        local += timedelta(days=1)
        if local.weekday() < 5 and local.date() not in holidays:
            added += 1
    return local.astimezone(UTC)


@dataclass(frozen=True)
class Deadlines:
    token_expires_at: datetime
    ack_due_at: datetime
    due_at: datetime


def deadlines(received_at: datetime, settings: Settings) -> Deadlines:
    return Deadlines(
        token_expires_at=received_at + timedelta(hours=settings.privacy_confirm_hours),
        ack_due_at=add_working_days(received_at, settings.privacy_ack_working_days, settings.holidays),
        due_at=received_at + timedelta(days=settings.privacy_due_days),
    )


def is_late(status: str, received_at: datetime, due_at: datetime, answered: int, now: datetime) -> bool:
    """In progress, past half its deadline, and some service has not answered (the SQL in privacy_store says
    the same for the list and the gauge)."""
    return (
        status == "in-progress"
        and answered < len(ANSWERING_SERVICES)
        and now >= received_at + (due_at - received_at) / 2
    )


def local_date(moment: datetime) -> str:
    return moment.astimezone(LOCAL_TIME).date().isoformat()


# --- 1. a request, and its confirmation --------------------------------------------------------------------


async def new_request(conn: Connection, form: PrivacyRequestForm, locale: Locale, settings: Settings) -> uuid.UUID:
    """Record an unconfirmed request and ask the notifier for the confirmation e-mail; inside a transaction."""
    request_id = uuid.uuid4()
    received_at = datetime.now(UTC)
    due = deadlines(received_at, settings)
    token = make_token(request_id, due.token_expires_at, token_key(settings))
    mail = new_event(
        NOTIFICATION_REQUESTED,
        settings.source,
        NotificationRequested(
            purpose=PURPOSE,
            template="privacy-confirm",
            locale=locale,
            recipient=Recipient(email=form.email),
            context={
                "kind": form.kind,
                "confirm_url": f"{settings.contact_public_url.rstrip('/')}/v1/privacy-requests/confirm?token={token}",
                "expires_at": due.token_expires_at.astimezone(LOCAL_TIME).strftime("%Y-%m-%d %H:%M (UTC+7)"),
            },
            reference=f"{CONFIRM_REFERENCE}{request_id}",
        ),
        purpose=PURPOSE,
    )
    await store.insert_request(
        conn,
        request_id,
        form.kind,
        form.email,
        locale,
        received_at,
        due.token_expires_at,
        due.ack_due_at,
        due.due_at,
        [mail.id],
    )
    await outbox.add(conn, mail)
    return request_id


class RequestNotFound(LookupError):
    pass


class AlreadyConfirmed(Exception):
    pass


async def pending(conn: Connection, token: str, settings: Settings) -> asyncpg.Record:
    """The unconfirmed request a link is for; raises BadToken, ExpiredToken, RequestNotFound, AlreadyConfirmed."""
    request_id = read_token(token, token_key(settings), datetime.now(UTC))
    row = await store.get_request(conn, request_id)
    if row is None:
        raise RequestNotFound
    if row["status"] != "unconfirmed":
        raise AlreadyConfirmed
    return row


async def confirm(conn: Connection, token: str, settings: Settings) -> asyncpg.Record:
    """Confirm the request of a link, once: it is in progress and every service is asked to answer, in one
    transaction (call inside one). Raises as `pending` does; nothing changes then."""
    now = datetime.now(UTC)
    request_id = read_token(token, token_key(settings), now)
    row = await store.confirm(conn, request_id, now)
    if row is None:
        # Why not: the same checks, in the order the person would understand them.
        await pending(conn, token, settings)
        raise ExpiredToken  # unconfirmed, yet past its expiry in the table: the token said otherwise by a hair
    event = new_event(
        PRIVACY_REQUEST_CONFIRMED,
        settings.source,
        PrivacyRequestConfirmed(
            request_id=row["id"], kind=row["kind"], email=row["email"], locale=row["locale"], confirmed_at=now
        ),
        purpose=PURPOSE,
    )
    await store.add_event_ids(conn, row["id"], [event.id])
    await outbox.add(conn, event)
    log.info("privacy request confirmed", request_id=str(row["id"]), kind=row["kind"])
    return row


# --- 2. the answers ---------------------------------------------------------------------------------------


def concerns_privacy(event: CloudEvent) -> bool:
    return event.type == PRIVACY_REQUEST_COMPLETED or event.purpose == PURPOSE


async def record_answer(conn: Connection, answer: PrivacyRequestCompleted, meta: Meta, *, source: str) -> None:
    """Handler of privacy.request.completed: a service's answer. The last one to arrive requests the e-mail
    (`source`: this service's, for the events it publishes)."""
    request = await store.lock_request(conn, answer.request_id)
    if request is None:
        log.warning("answer to an unknown privacy request ignored", request_id=str(answer.request_id))
        return
    if answer.kind != request["kind"]:
        raise PermanentError(f"answer of kind {answer.kind} to a request of kind {request['kind']}")
    if request["status"] != "in-progress":
        log.info("answer to a privacy request not in progress ignored", request_id=str(answer.request_id))
        return
    export = answer.export if answer.kind == "access" else None
    fresh = await store.insert_answer(
        conn, answer.request_id, answer.service, answer.summary, answer.counts, export, answer.completed_at
    )
    if not fresh:
        return
    answers = await store.answers_with_exports(conn, answer.request_id)
    if {a["service"] for a in answers} >= set(ANSWERING_SERVICES):
        await _finish(conn, request, answers, source)


async def _finish(conn: Connection, request: asyncpg.Record, answers: list[asyncpg.Record], source: str) -> None:
    """The one e-mail with the outcome; then the request forgets the address and the exports."""
    locale: Locale = request["locale"]
    kind = request["kind"]
    now = datetime.now(UTC)
    by_service = {a["service"]: a for a in answers}
    context: dict[str, Any] = {  # a template's variables
        "answers": [
            {
                "service": SERVICE_LABELS.get(service, {}).get(locale, service),
                "summary": by_service[service]["summary"],
                "counts": orjson.loads(by_service[service]["counts"]),
            }
            for service in ANSWERING_SERVICES
        ]
    }
    attachments: list[Attachment] = []
    if kind == "access":
        document = personal_data(request, answers, now)
        if len(orjson.dumps(document)) <= ATTACHMENTS_MAX_BYTES:
            attachments.append(Attachment(filename=ATTACHMENT_NAME, content_type="application/json", content=document))
            context["attached"] = True
        else:
            log.warning("personal data too large to attach", request_id=str(request["id"]), bytes=len(document))
            context["attached"] = False
    mail = new_event(
        NOTIFICATION_REQUESTED,
        source,
        NotificationRequested(
            purpose=PURPOSE,
            template=f"privacy-{kind}",
            locale=locale,
            recipient=Recipient(email=request["email"]),
            context=context,
            reference=f"{FINAL_REFERENCE}{request['id']}",
            attachments=attachments,
        ),
        purpose=PURPOSE,
    )
    await outbox.add(conn, mail)
    await store.complete(conn, request["id"], now, mail.id)
    log.info("privacy request completed", request_id=str(request["id"]), kind=kind)


def personal_data(request: asyncpg.Record, answers: list[asyncpg.Record], now: datetime) -> str:
    """`personal-data.json`: the request, then one section per service with what it keeps."""
    document = {
        "request_id": str(request["id"]),
        "email": request["email"],
        "generated_at": now.isoformat(),
        "services": {
            a["service"]: {
                "summary": a["summary"],
                "counts": orjson.loads(a["counts"]),
                "answered_at": a["answered_at"].isoformat(),
                "data": orjson.loads(a["export"]) if a["export"] else {},
            }
            for a in answers
        },
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode()


async def record_outcome(conn: Connection, outcome: NotificationOutcome, event: Meta) -> None:
    """notification.sent / failed of this workflow's e-mails: the confirmation e-mail sent is the
    acknowledgement; the final e-mail's delivery is shown to the operators."""
    reference = outcome.reference or ""
    for prefix in (CONFIRM_REFERENCE, FINAL_REFERENCE):
        if reference.startswith(prefix):
            try:
                request_id = uuid.UUID(reference.removeprefix(prefix))
            except ValueError:
                log.warning("outcome with an unreadable reference ignored")
                return
            if prefix == CONFIRM_REFERENCE:
                if outcome.status == "sent":
                    await store.set_acknowledged(conn, request_id, event.time or datetime.now(UTC))
            else:
                await store.set_final_mail(conn, request_id, outcome.status)
            return


# --- 3. the operators' extension --------------------------------------------------------------------------


class CannotExtend(Exception):
    pass


async def extend(conn: Connection, request_id: uuid.UUID, reason: str, settings: Settings) -> asyncpg.Record:
    """Record the one extension, move the due date, and e-mail the person why; inside a transaction."""
    request = await store.lock_request(conn, request_id)
    if request is None:
        raise RequestNotFound
    due_at = request["due_at"] + timedelta(days=settings.privacy_extension_days)
    row = await store.extend(conn, request_id, datetime.now(UTC), reason, due_at)
    if row is None:
        raise CannotExtend(
            "the deadline was extended already"
            if request["extended_at"] is not None
            else f"a request that is {request['status']} cannot be extended"
        )
    mail = new_event(
        NOTIFICATION_REQUESTED,
        settings.source,
        NotificationRequested(
            purpose=PURPOSE,
            template="privacy-extension",
            locale=row["locale"],
            recipient=Recipient(email=row["email"]),
            context={"kind": row["kind"], "reason": reason, "due_date": local_date(due_at)},
            reference=f"{EXTENSION_REFERENCE}{request_id}",
        ),
        purpose=PURPOSE,
    )
    await store.add_event_ids(conn, request_id, [mail.id])
    await outbox.add(conn, mail)
    return row


# --- housekeeping -----------------------------------------------------------------------------------------


async def sweep(pool: asyncpg.Pool) -> None:
    """Unconfirmed requests whose link expired go; completed requests' published events are deleted."""
    async with pool.acquire() as conn, conn.transaction():
        expired = await store.delete_unconfirmed_before(conn, datetime.now(UTC))
        forgotten = await store.forget_published_events(conn, expired)
    if expired or forgotten:
        log.info("privacy requests swept", unconfirmed_events=len(expired), events_deleted=forgotten)


async def sweep_periodically(pool: asyncpg.Pool, interval_seconds: float, health: LoopHealth) -> None:
    while True:
        try:
            await sweep(pool)
            health.ok()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            health.failed(describe_error(exc))
        await asyncio.sleep(interval_seconds)
