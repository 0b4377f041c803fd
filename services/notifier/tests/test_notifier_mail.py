"""Every template in both languages becomes a well-formed multipart/alternative e-mail the `email` package reads."""

from __future__ import annotations

import email
import email.policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.utils import parsedate_to_datetime

import pytest
from notifier.mail import (
    Composer,
    FileAttachment,
    RenderError,
    Unsubscribe,
    encode_words,
    stable_message_id,
    usable_message_id,
)
from notifier.policy import CATEGORY_OF, LOCALES, TEMPLATES, check_request
from notifier_helpers import SAMPLE_CONTEXTS

MAIL_FROM = "Nhóm SPM <no-reply@spmgroup.vn>"
composer = Composer(MAIL_FROM)


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def render(template: str, locale: str, **overrides: object) -> EmailMessage:
    category = CATEGORY_OF.get(TEMPLATES[template].purpose)
    arguments: dict = {
        "template": template,
        "locale": locale,
        "email": "an.nguyen@example.vn",
        "name": "Nguyễn Văn An",
        "context": SAMPLE_CONTEXTS[template],
        "message_id": "<n-test@spmgroup.vn>",
        "in_reply_to": "<contact-1@spmgroup.vn>" if template == "contact-reply" else None,
        "unsubscribe": Unsubscribe(
            "https://notify.example.com/v1/unsubscribe?token=1u.abc.def",
            "mailto:unsubscribe@spmgroup.vn?subject=unsubscribe%201u.abc.def",
            category,
        )
        if category
        else None,
    }
    arguments.update(overrides)
    outgoing = composer.compose(**arguments)
    assert outgoing.recipient == "an.nguyen@example.vn"
    assert outgoing.sender == "no-reply@spmgroup.vn"
    assert all(len(line) <= 998 for line in outgoing.data.split(b"\r\n"))
    assert b"\n" not in outgoing.data.replace(b"\r\n", b"")
    return parse(outgoing.data)


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_every_template_renders_in_both_languages(template: str, locale: str) -> None:
    assert check_request(template, TEMPLATES[template].purpose, SAMPLE_CONTEXTS[template]) is None
    message = render(template, locale)

    assert message.defects == []
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert message["From"].addresses[0].display_name == "Nhóm SPM"
    assert message["From"].addresses[0].addr_spec == "no-reply@spmgroup.vn"
    assert message["To"].addresses[0].display_name == "Nguyễn Văn An"
    assert message["Message-ID"] == "<n-test@spmgroup.vn>"
    assert parsedate_to_datetime(message["Date"]).tzinfo is not None
    assert message["Content-Language"] == locale
    subject = message["Subject"]
    assert subject and "=?" not in subject and "\n" not in subject
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert ("Xin chào Nguyễn Văn An" if locale == "vi" else "Hello Nguyễn Văn An") in text
    assert f'<html lang="{locale}">' in html

    unsubscribes = TEMPLATES[template].purpose in CATEGORY_OF
    assert (message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click") is unsubscribes
    if unsubscribes:
        assert message["List-Unsubscribe"].startswith("<https://notify.example.com/v1/unsubscribe?token=")
        assert "<mailto:unsubscribe@spmgroup.vn?subject=" in message["List-Unsubscribe"]
        assert "https://notify.example.com/v1/unsubscribe?token=1u.abc.def" in text
        assert 'href="https://notify.example.com/v1/unsubscribe?token=1u.abc.def"' in html
    else:
        assert message["List-Unsubscribe"] is None
        assert "unsubscribe" not in text.lower()
    if template in ("order-confirmation", "license-recovery"):
        assert "7KQ2M-XW4PD-9TRHC-B3NVA-L6ZEY" in text and "7KQ2M-XW4PD-9TRHC-B3NVA-L6ZEY" in html
    if template == "contact-ack":
        assert "Hỏi về giấy phép" in text and "Hỏi về giấy phép" in html
    if template == "contact-reply":
        assert message["In-Reply-To"] == "<contact-1@spmgroup.vn>"
        assert message["References"] == "<contact-1@spmgroup.vn>"
        assert subject == "Re: Hỏi về giấy phép"


def test_vietnamese_subjects_and_names_are_rfc2047_utf8() -> None:
    raw = composer.compose(
        template="order-confirmation",
        locale="vi",
        email="an.nguyen@example.vn",
        name="Nguyễn Văn An Trường Giang Đặng Thị Hồng Nhung Phạm",
        context=SAMPLE_CONTEXTS["order-confirmation"],
        message_id="<x@spmgroup.vn>",
    ).data
    headers = raw.split(b"\r\n\r\n", 1)[0]
    assert headers.isascii()
    assert b"=?utf-8?b?" in headers
    assert all(len(line) <= 78 for line in headers.split(b"\r\n"))
    message = parse(raw)
    assert message["Subject"] == "Đơn hàng FS-2026-000123: giấy phép và liên kết tải về"
    # Python's address parser adds a space between adjacent encoded words (RFC 2047 section 6.2 says to drop
    # it, as mail clients do); the RFC 2047 decoder of the `email.header` module reads it as clients do.
    raw_to = email.message_from_bytes(raw)["To"]
    assert str(make_header(decode_header(raw_to))) == (
        "Nguyễn Văn An Trường Giang Đặng Thị Hồng Nhung Phạm <an.nguyen@example.vn>"
    )


def test_encoded_words_never_split_a_character() -> None:
    text = "Ữ" * 40 + "😀" * 7
    encoded = encode_words(text)
    assert all(len(word) <= 75 for word in encoded.split("\r\n "))
    assert parse(f"Subject: {encoded}\r\n\r\n".encode())["Subject"] == text


def test_user_text_cannot_add_headers_or_markup() -> None:
    message = render(
        "contact-reply",
        "en",
        name='Evil\r\nBcc: victim@example.com "quoted"',
        context={"subject": "Hi\r\nBcc: victim@example.com", "reply_body": "<script>alert(1)</script>"},
    )
    assert message["Bcc"] is None
    assert message["Subject"] == "Re: Hi Bcc: victim@example.com"
    html = message.get_body(("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<script>alert(1)</script>" in message.get_body(("plain",)).get_content()


@pytest.mark.parametrize("tail", ["\n", "\r\n", "\nBcc: victim@example.com"])
def test_a_message_id_with_a_line_break_is_not_used(tail: str) -> None:
    # A requester's Message-ID or In-Reply-To ending in a line break would add a line to the headers.
    assert usable_message_id("<contact-1@spmgroup.vn>" + tail) is None
    message = render("contact-reply", "en", in_reply_to="<contact-1@spmgroup.vn>" + tail)
    assert message["In-Reply-To"] is None and message["Bcc"] is None
    assert message["Auto-Submitted"] == "auto-generated"
    assert usable_message_id("<contact-1@spmgroup.vn>") == "<contact-1@spmgroup.vn>"


def test_unusable_recipient_addresses_are_refused() -> None:
    for bad in ("no-at-sign", "a@b>\r\nBcc: x@example.com", "ü@example.com"):
        with pytest.raises(RenderError):
            render("contact-ack", "en", email=bad)


def test_ascii_names_with_specials_are_quoted() -> None:
    message = render("contact-ack", "en", name='Doe, "Jo"')
    assert message["To"].addresses[0].display_name == 'Doe, "Jo"'


def test_message_id_is_stable_per_delivery_key() -> None:
    first = stable_message_id("urn:spm:orders|e1|ref", MAIL_FROM)
    assert first == stable_message_id("urn:spm:orders|e1|ref", MAIL_FROM)
    assert first != stable_message_id("urn:spm:orders|e2|ref", MAIL_FROM)
    assert first.startswith("<n-") and first.endswith("@spmgroup.vn>")


def test_an_attachment_travels_as_a_file_next_to_the_text_and_html() -> None:
    content = '{\n  "orders": {"name": "Nguyễn Văn An"},\r\n  "x": "' + "é" * 200 + '"\n}'
    raw = composer.compose(
        template="privacy-access",
        locale="vi",
        email="an.nguyen@example.vn",
        name=None,
        context=SAMPLE_CONTEXTS["privacy-access"],
        message_id="<x@spmgroup.vn>",
        attachments=[FileAttachment("personal-data.json", "application/json", content)],
    ).data
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    message = parse(raw)
    assert message.defects == []
    assert message.get_content_type() == "multipart/mixed"
    body, attached = message.iter_parts()
    assert body.get_content_type() == "multipart/alternative"
    assert message.get_body(("plain",)).get_content().startswith("Xin chào")
    assert attached.get_content_type() == "application/json"
    assert attached.get_filename() == "personal-data.json"
    assert attached.get_content_disposition() == "attachment"
    assert attached.get_payload(decode=True) == content.encode()  # byte for byte, line ends included


def test_an_attachment_with_a_name_unfit_for_a_header_is_refused() -> None:
    with pytest.raises(RenderError):
        composer.compose(
            template="privacy-access",
            locale="en",
            email="an.nguyen@example.vn",
            name=None,
            context=SAMPLE_CONTEXTS["privacy-access"],
            message_id="<x@spmgroup.vn>",
            attachments=[FileAttachment('a"\r\nBcc: x@evil.example', "application/json", "{}")],
        )
