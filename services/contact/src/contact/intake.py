"""What a valid contact message is, and what receiving one causes.

Name, address and subject end up in mail headers, so they must be one line: any control character, line or
paragraph separator, RFC 2047 encoded word or percent-encoded line break is refused rather than cleaned,
because a cleaned header injection is still a message nobody meant to send.
"""

from __future__ import annotations

import functools
import re
import unicodedata
import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError
from spm_common import cards
from spm_common.addresses import is_plain_address
from spm_common.envelope import OutboxRow, Purpose, new_event_body
from spm_common.notifications import NOTIFICATION_REQUESTED, message_id_for

from contact.events import MESSAGE_RECEIVED

PURPOSE: Purpose = "answer-message"
ACK_TEMPLATE = "contact-ack"
Locale = Literal["vi", "en"]

NAME_MAX = 200
EMAIL_MAX = 254
SUBJECT_MAX = 200
MESSAGE_MAX = 10_000

# `=?charset?B|Q?text?=`: a mail client would decode it, line breaks included.
_ENCODED_WORD = re.compile(r"=\?[^?\s]*\?[bq]\?[^?]*\?=", re.IGNORECASE)
_PERCENT_BREAK = re.compile(r"%(?:0d|0a|00)", re.IGNORECASE)
# Unicode categories Cc (C0 controls, DEL, C1 controls), Zl and Zp, spelled as character classes so the
# check runs in C: it runs on every character of every message.
_NOT_ONE_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _refuse(kind: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(kind, message)


def clean_line(text: str, max_length: int) -> str:
    """One header-safe line: NFC, trimmed, bounded, no control or separator characters in any encoding."""
    text = unicodedata.normalize("NFC", text).strip()
    if _NOT_ONE_LINE.search(text):
        raise _refuse("single_line", "must be a single line without control characters")
    if _ENCODED_WORD.search(text) or _PERCENT_BREAK.search(text):
        raise _refuse("single_line", "must not contain encoded line breaks or encoded words")
    if len(text) > max_length:
        raise _refuse("too_long", f"must be at most {max_length} characters")
    return text


def clean_text(text: str, max_length: int) -> str:
    """A multi-line body: NFC, trimmed, line endings unified, no control characters but tab and newline."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n").strip()
    if _CONTROL_IN_TEXT.search(text):
        raise _refuse("control_characters", "must not contain control characters")
    if len(text) > max_length:
        raise _refuse("too_long", f"must be at most {max_length} characters")
    return text


def _required(text: str) -> str:
    if not text:
        raise _refuse("missing", "must not be empty")
    return text


def _name(text: str) -> str:
    return _required(clean_line(text, NAME_MAX))


def _without_card_numbers(text: str) -> str:
    """A card number a visitor wrote ("charge 4111 1111 1111 1111") is masked to its last four digits before
    the text is stored for a year and shown to operators: the privacy policy keeps no card data."""
    return cards.mask_text(text)[0]


def _subject(text: str | None) -> str | None:
    if text is None:
        return None
    return _without_card_numbers(clean_line(text, SUBJECT_MAX)) or None


def _message(text: str) -> str:
    return _without_card_numbers(_required(clean_text(text, MESSAGE_MAX)))


def _email(text: str) -> str:
    text = clean_line(text, EMAIL_MAX)
    if is_plain_address(text):
        # What email-validator would answer, at a fortieth of its cost: the address as sent, domain in lower case.
        local, _, domain = text.partition("@")
        return f"{local}@{domain.lower()}"
    try:
        # Syntax and domain shape only; a DNS look-up (contact_check_email_domain) is the API's choice.
        return validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError:
        raise _refuse("email", "not a valid e-mail address") from None


# The form's rule for an address, for the other forms of this service (privacy requests).
valid_email = _email


class ContactForm(BaseModel):
    """What the website's contact form sends."""

    model_config = ConfigDict(extra="ignore")

    name: Annotated[str, Field(min_length=1, max_length=NAME_MAX), AfterValidator(_name)]
    email: Annotated[str, Field(min_length=3, max_length=EMAIL_MAX), AfterValidator(_email)]
    subject: Annotated[str | None, Field(max_length=SUBJECT_MAX), AfterValidator(_subject)] = None
    message: Annotated[str, Field(min_length=1, max_length=MESSAGE_MAX), AfterValidator(_message)]
    locale: Locale | None = None
    website: Annotated[
        str | None,
        Field(
            max_length=2000,
            description="Honeypot: a field the form hides from people. Filled in, the message is dropped "
            "silently (the answer is the usual 202).",
        ),
    ] = None

    @property
    def is_spam(self) -> bool:
        return bool(self.website and self.website.strip())


class Received(BaseModel):
    id: uuid.UUID
    name: str
    email: str
    subject: str | None
    body: str
    locale: Locale
    ack_message_id: str
    received_at: datetime


def preferred_locale(explicit: str | None, accept_language: str | None) -> Locale:
    """The form's locale, else the best of vi/en in Accept-Language (by q-value), else English."""
    if explicit == "vi":
        return "vi"
    if explicit == "en":
        return "en"
    return _locale_of((accept_language or "")[:500])


@functools.lru_cache(maxsize=1024)  # browsers send a handful of distinct headers; each is parsed once
def _locale_of(accept_language: str) -> Locale:
    candidates: list[tuple[float, int, Locale]] = []
    for position, part in enumerate(accept_language.split(",")):
        tag, _, params = part.strip().partition(";")
        primary = tag.strip().lower().split("-", 1)[0]
        if primary not in ("vi", "en"):
            continue
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            candidates.append((quality, -position, "vi" if primary == "vi" else "en"))
    return max(candidates)[2] if candidates else "en"


def new_message(form: ContactForm, locale: Locale, mail_from: str) -> Received:
    message_id = uuid.uuid4()
    return Received(
        id=message_id,
        name=form.name,
        email=form.email,
        subject=form.subject,
        body=form.message,
        locale=locale,
        ack_message_id=message_id_for(f"contact-{message_id}", mail_from),
        received_at=datetime.now(UTC),
    )


def receipt_events(
    message: Received, policy_version: int | None, source: str, correlation_id: str | None = None
) -> list[OutboxRow]:
    """What storing a message causes: the fact, and the acknowledgement to its sender.

    The payloads are the `MessageReceived` and `NotificationRequested` models' fields, in their order, filled
    in here from a message the form has already validated (a test holds them to the models): built without
    validating again what this code itself put together, on every message (~40 -> ~10 µs for the two)."""
    fact = new_event_body(
        MESSAGE_RECEIVED,
        source,
        {
            "message_id": str(message.id),
            "email": message.email,
            "locale": message.locale,
            "received_at": message.received_at,
            "privacy_policy_version": policy_version,
        },
        correlation_id=correlation_id,
        purpose=PURPOSE,
    )
    acknowledgement = new_event_body(
        NOTIFICATION_REQUESTED,
        source,
        {
            "purpose": PURPOSE,
            "template": ACK_TEMPLATE,
            "locale": message.locale,
            "recipient": {"email": message.email, "name": message.name},
            "context": {"subject": message.subject},
            "message_id": message.ack_message_id,
            "in_reply_to": None,
            "reference": f"contact.message:{message.id}",
        },
        correlation_id=correlation_id,
        purpose=PURPOSE,
    )
    return [fact, acknowledgement]
