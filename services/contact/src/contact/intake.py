"""What a valid contact message is, and what receiving one causes."""

from __future__ import annotations

import unicodedata
import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from spm_common.envelope import CloudEvent, new_event
from spm_common.notifications import NOTIFICATION_REQUESTED, NotificationRequested, Recipient, message_id_for

from contact.events import MESSAGE_RECEIVED, MessageReceived

PURPOSE = "answer-message"


def _clean(text: str) -> str:
    return unicodedata.normalize("NFC", text).strip()


def _single_line(text: str) -> str:
    text = _clean(text)
    if any(ch in text for ch in "\r\n\x00"):
        raise ValueError("must be a single line")
    return text


def _email(text: str) -> str:
    text = _single_line(text)
    try:
        return validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError("not a valid e-mail address") from exc


SingleLine = Annotated[str, AfterValidator(_single_line)]


class ContactForm(BaseModel):
    model_config = ConfigDict(extra="ignore", str_max_length=10_000)

    name: Annotated[str, Field(max_length=200), AfterValidator(_single_line), Field(min_length=1)]
    email: Annotated[str, Field(max_length=254), AfterValidator(_email)]
    subject: Annotated[str | None, Field(default=None, max_length=200)] = None
    message: Annotated[str, Field(min_length=1, max_length=10_000), AfterValidator(_clean)]
    locale: Literal["vi", "en"] | None = None


class Received(BaseModel):
    id: uuid.UUID
    name: str
    email: str
    subject: str | None
    body: str
    locale: Literal["vi", "en"]
    ack_message_id: str
    received_at: datetime


def receive(
    form: ContactForm, locale: Literal["vi", "en"], mail_from: str, source: str
) -> tuple[Received, list[CloudEvent]]:
    """The stored message and the events it causes: the fact, and the acknowledgement to its sender."""
    message_id = uuid.uuid4()
    received = Received(
        id=message_id,
        name=form.name,
        email=form.email,
        subject=_single_line(form.subject) if form.subject else None,
        body=form.message,
        locale=locale,
        ack_message_id=message_id_for(f"contact-{message_id}", mail_from),
        received_at=datetime.now(UTC),
    )
    fact = new_event(
        MESSAGE_RECEIVED,
        source,
        MessageReceived(
            message_id=str(message_id), email=received.email, locale=locale, received_at=received.received_at
        ),
        purpose=PURPOSE,
    )
    acknowledgement = new_event(
        NOTIFICATION_REQUESTED,
        source,
        NotificationRequested(
            purpose=PURPOSE,
            template="contact-ack",
            locale=locale,
            recipient=Recipient(email=received.email, name=received.name),
            context={"subject": received.subject},
            message_id=received.ack_message_id,
            reference=f"contact.message:{message_id}",
        ),
        purpose=PURPOSE,
    )
    return received, [fact, acknowledgement]
