"""Unit tests of the intake and rate-limit rules: no servers."""

from __future__ import annotations

import re
import unicodedata

import pytest
from contact.events import MESSAGE_RECEIVED, MessageReceived
from contact.intake import (
    ACK_TEMPLATE,
    PURPOSE,
    ContactForm,
    clean_line,
    clean_text,
    new_message,
    preferred_locale,
    receipt_events,
)
from email_validator import EmailNotValidError, validate_email
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from spm_common.envelope import CloudEvent, new_event
from spm_common.notifications import NOTIFICATION_REQUESTED, NotificationRequested, Recipient

VALID = {"name": "Trần Văn Thử", "email": "tran.thu@example.vn", "message": "Xin chào"}


def test_text_is_nfc_normalised_and_trimmed() -> None:
    decomposed = unicodedata.normalize("NFD", "  Nguyễn Văn Thử  ")
    assert clean_line(decomposed, 200) == unicodedata.normalize("NFC", "Nguyễn Văn Thử")
    assert clean_text("  dòng một\r\ndòng hai\r  ", 100) == "dòng một\ndòng hai"


@pytest.mark.parametrize(
    "value",
    [
        "Eve\r\nBcc: victim@example.com",
        "Eve\nBcc: victim@example.com",
        "Eve\rBcc: victim@example.com",
        "Eve\x00",
        "Eve\u2028Bcc: victim@example.com",
        "Eve\u2029x",
        "Eve\x85Bcc: victim@example.com",
        "Eve\tx",
        "=?utf-8?q?Eve=0D=0ABcc=3A_victim=40example=2Ecom?=",
        "=?UTF-8?B?RXZlDQpCY2M6IHZpY3RpbUBleGFtcGxlLmNvbQ==?=",
        "Eve%0d%0aBcc: victim@example.com",
        "Eve%0ABcc: victim@example.com",
    ],
)
def test_header_fields_refuse_line_breaks_in_any_encoding(value: str) -> None:
    with pytest.raises(ValueError):
        clean_line(value, 200)
    for field in ("name", "subject", "email"):
        with pytest.raises(ValidationError) as caught:
            ContactForm.model_validate({**VALID, field: value})
        assert caught.value.errors()[0]["loc"] == (field,)


def test_the_body_may_have_lines_but_no_control_characters() -> None:
    assert ContactForm.model_validate({**VALID, "message": "một\nhai\tba"}).message == "một\nhai\tba"
    for bad in ("a\x00b", "a\x1bb", "a\x07b"):
        with pytest.raises(ValidationError):
            ContactForm.model_validate({**VALID, "message": bad})


@pytest.mark.parametrize("field", ["name", "message", "email"])
def test_required_fields_must_have_content(field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ContactForm.model_validate({**VALID, field: "   "})
    assert caught.value.errors()[0]["loc"] == (field,)


@pytest.mark.parametrize(
    "address",
    ["no-at-sign", "a@b", "a@localhost", "two@@example.com", "a@example.com, b@example.com", "Eve <a@example.com>"],
)
def test_email_needs_valid_syntax_and_a_domain(address: str) -> None:
    with pytest.raises(ValidationError):
        ContactForm.model_validate({**VALID, "email": address})


def test_email_is_normalised() -> None:
    assert ContactForm.model_validate({**VALID, "email": " Thu@EXAMPLE.VN "}).email == "Thu@example.vn"


@settings(max_examples=1000, deadline=None)
@given(st.emails() | st.from_regex(r"[A-Za-z0-9._%+-]{1,12}@[A-Za-z0-9.-]{1,12}\.[A-Za-z0-9]{1,5}", fullmatch=True))
@example("Thu@EXAMPLE.VN")
@example("a@xn--bcher-kva.example")
def test_the_form_takes_an_address_as_email_validator_does(address: str) -> None:
    # Plain addresses skip email-validator (it costs more than the rest of the intake); the answer is the same.
    try:
        expected: str | None = validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError:
        expected = None
    if re.search(r"%(?:0d|0a|00)", address, re.IGNORECASE):
        expected = None  # beyond email-validator, the form refuses percent-encoded line breaks in every field
    try:
        got: str | None = ContactForm.model_validate({**VALID, "email": address}).email
    except ValidationError:
        got = None
    assert got == expected


def test_lengths_are_bounded() -> None:
    for field, limit in (("name", 200), ("subject", 200), ("message", 10_000)):
        ContactForm.model_validate({**VALID, field: "x" * limit})
        with pytest.raises(ValidationError):
            ContactForm.model_validate({**VALID, field: "x" * (limit + 1)})


def test_blank_subject_is_no_subject_and_honeypot_marks_spam() -> None:
    assert ContactForm.model_validate({**VALID, "subject": "  "}).subject is None
    assert not ContactForm.model_validate(VALID).is_spam
    assert not ContactForm.model_validate({**VALID, "website": " "}).is_spam
    assert ContactForm.model_validate({**VALID, "website": "http://spam.example.com"}).is_spam


@pytest.mark.parametrize(
    ("explicit", "header", "expected"),
    [
        ("vi", "en-US", "vi"),
        (None, "vi-VN,vi;q=0.9,en;q=0.8", "vi"),
        (None, "en-US,en;q=0.9,vi;q=0.8", "en"),
        (None, "fr-FR,vi;q=0.5,en;q=0.4", "vi"),
        (None, "en;q=0.2, vi;q=0.7", "vi"),
        (None, "vi;q=0, en;q=0.1", "en"),
        (None, "fr, de", "en"),
        (None, "", "en"),
        (None, None, "en"),
        (None, "vi;q=abc", "en"),
    ],
)
def test_locale_from_form_then_accept_language_then_english(
    explicit: str | None, header: str | None, expected: str
) -> None:
    assert preferred_locale(explicit, header) == expected


@pytest.mark.parametrize(
    ("subject", "policy_version", "correlation_id"), [("Hỏi về giấy phép", 3, "req-1"), (None, None, None)]
)
def test_receipt_events_are_byte_for_byte_what_the_models_would_make(
    subject: str | None, policy_version: int | None, correlation_id: str | None
) -> None:
    form = ContactForm.model_validate({**VALID, "subject": subject})
    message = new_message(form, "vi", "SPM <noreply@example.com>")
    rows = receipt_events(message, policy_version, "urn:spm:contact", correlation_id)
    expected = [
        MessageReceived(
            message_id=str(message.id),
            email=message.email,
            locale=message.locale,
            received_at=message.received_at,
            privacy_policy_version=policy_version,
        ),
        NotificationRequested(
            purpose=PURPOSE,
            template=ACK_TEMPLATE,
            locale=message.locale,
            recipient=Recipient(email=message.email, name=message.name),
            context={"subject": message.subject},
            message_id=message.ack_message_id,
            reference=f"contact.message:{message.id}",
        ),
    ]
    for row, event_type, model in zip(rows, (MESSAGE_RECEIVED, NOTIFICATION_REQUESTED), expected, strict=True):
        stored = CloudEvent.parse(row.body)
        # The same event made the usual way, with this one's id and time.
        made = new_event(event_type, "urn:spm:contact", model, correlation_id=correlation_id, purpose=PURPOSE)
        assert row.body == made.model_copy(update={"id": stored.id, "time": stored.time}).to_json()
        assert (row.id, row.type) == (stored.id, stored.type)
