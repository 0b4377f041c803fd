"""The operators' inbox: replying to a message, closing it, and what the notifier reports about the mail.

A reply is stored and its e-mail requested in one transaction; the request threads the reply under the
acknowledgement (`in_reply_to` = its Message-ID), so the visitor's mail client shows one conversation.
The notifier's outcome, matched by the request's `reference`, becomes the reply's delivery status.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field
from spm_common import cards, outbox
from spm_common.db import Connection
from spm_common.envelope import CloudEvent, new_event
from spm_common.handlers import Meta
from spm_common.logging import get_logger
from spm_common.notifications import NOTIFICATION_REQUESTED, NotificationOutcome, NotificationRequested, Recipient
from spm_common.notifications import message_id_for as mail_id_for

from contact import store
from contact.events import (
    MESSAGE_CLOSED,
    MESSAGE_REOPENED,
    MESSAGE_REPLIED,
    MessageClosed,
    MessageReopened,
    MessageReplied,
)
from contact.intake import PURPOSE, clean_text

REPLY_MAX = 20_000
ACK_REFERENCE = "contact.message:"
REPLY_REFERENCE = "contact.reply:"
ERROR_MAX = 500
log = get_logger(__name__)


def _reply_body(text: str) -> str:
    text = clean_text(text, REPLY_MAX)
    if not text:
        raise ValueError("must not be empty")
    # An operator who pastes a visitor's card number into a reply: masked as the visitor's own message is
    # (intake), before the reply is stored and e-mailed. The privacy policy keeps no card data.
    return cards.mask_text(text)[0]


class ReplyForm(BaseModel):
    body: Annotated[str, Field(min_length=1, max_length=REPLY_MAX), AfterValidator(_reply_body)]


class MessageNotFound(LookupError):
    pass


class MessageIsClosed(Exception):
    pass


@dataclass(frozen=True)
class NewReply:
    id: uuid.UUID
    message_id: uuid.UUID
    created_at: datetime


async def reply(
    conn: Connection, message_id: uuid.UUID, body: str, mail_from: str, source: str, operator: str | None = None
) -> NewReply:
    """Store a reply and ask the notifier to e-mail it to the message's sender; call inside a transaction."""
    message = await store.lock_message(conn, message_id)
    if message is None:
        raise MessageNotFound
    if message["status"] == "closed":
        raise MessageIsClosed
    reply_id = uuid.uuid4()
    created_at = datetime.now(UTC)
    mail_id = mail_id_for(f"contact-reply-{reply_id}", mail_from)
    await store.insert_reply(conn, reply_id, message_id, body, mail_id, created_at, operator)
    await store.mark_answered(conn, message_id)
    request = NotificationRequested(
        purpose=PURPOSE,
        template="contact-reply",
        locale=message["locale"],
        recipient=Recipient(email=message["email"], name=message["name"]),
        context={"subject": message["subject"], "reply_body": body},
        message_id=mail_id,
        in_reply_to=message["ack_message_id"],
        reference=f"{REPLY_REFERENCE}{reply_id}",
    )
    await outbox.add_many(
        conn,
        [
            new_event(NOTIFICATION_REQUESTED, source, request, purpose=PURPOSE),
            new_event(
                MESSAGE_REPLIED,
                source,
                MessageReplied(message_id=str(message_id), reply_id=str(reply_id), replied_at=created_at),
                purpose=PURPOSE,
            ),
        ],
    )
    return NewReply(reply_id, message_id, created_at)


async def close(conn: Connection, message_id: uuid.UUID, source: str, operator: str | None = None) -> None:
    """Close a message (once; closing it again changes nothing); call inside a transaction."""
    closed_at = await store.close_message(conn, message_id, datetime.now(UTC), operator)
    if closed_at is None:
        if not await store.message_exists(conn, message_id):
            raise MessageNotFound
        return
    await outbox.add(
        conn,
        new_event(
            MESSAGE_CLOSED,
            source,
            MessageClosed(message_id=str(message_id), closed_at=closed_at),
            purpose=PURPOSE,
        ),
    )


async def reopen(conn: Connection, message_id: uuid.UUID, source: str) -> None:
    """Open a closed message again, so it can be answered (an open one stays as it is); inside a transaction."""
    if not await store.reopen_message(conn, message_id):
        if not await store.message_exists(conn, message_id):
            raise MessageNotFound
        return
    await outbox.add(
        conn,
        new_event(
            MESSAGE_REOPENED,
            source,
            MessageReopened(message_id=str(message_id), reopened_at=datetime.now(UTC)),
            purpose=PURPOSE,
        ),
    )


def concerns_contact(event: CloudEvent) -> bool:
    return event.purpose == PURPOSE


async def record_outcome(conn: Connection, outcome: NotificationOutcome, meta: Meta) -> None:
    """Handler of notification.sent / notification.failed: the delivery status of an acknowledgement or a reply.

    Outcomes of other services' mail arrive here too (same event types) and are ignored, as are outcomes of
    mail whose message retention has already deleted. A late failure never hides a delivery that succeeded.
    """
    reference = outcome.reference or ""
    if outcome.purpose != PURPOSE:
        return
    error = outcome.error[:ERROR_MAX] if outcome.error else None
    for prefix, update in ((REPLY_REFERENCE, store.set_reply_delivery), (ACK_REFERENCE, store.set_ack_delivery)):
        if reference.startswith(prefix):
            try:
                target = uuid.UUID(reference.removeprefix(prefix))
            except ValueError:
                log.warning("outcome with an unreadable reference ignored")
                return
            if not await update(conn, target, outcome.status, error):
                log.info("outcome for mail no longer on record ignored")
            return
