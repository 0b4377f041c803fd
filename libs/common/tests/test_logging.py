"""Logs carry the service, event id and correlation id, and never personal data: unit tests of the redactor,
and lines rendered through `configure_logging` as a service would."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import unicodedata
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError
from spm_common.logging import bound_contextvars, get_logger
from spm_common.redaction import REDACTED, describe_error, redact, redact_text
from spm_common.testing.logs import CapturedLogs, captured_json_logs


@pytest.mark.parametrize(
    "text",
    [
        "an.nguyen@example.vn",
        "Visitor.Name+tag@mail.example.com",
        "<tran.thi.thu@example.com>",
        "trần.thị@ví-dụ.example.vn",
    ],
)
def test_email_addresses_are_redacted(text: str) -> None:
    redacted = redact_text(f"mail to {text} failed")
    assert "@" not in redacted
    assert REDACTED in redacted
    assert redacted.startswith("mail to ")


@pytest.mark.parametrize(
    "phone", ["+84 912 345 678", "0912 345 678", "0912345678", "(028) 3822 1234", "+1-202-555-0143", "091.234.5678"]
)
def test_phone_numbers_are_redacted(phone: str) -> None:
    redacted = redact_text(f"call {phone} today")
    assert redacted == f"call {REDACTED} today"


@pytest.mark.parametrize(
    "card",
    ["4111 1111 1111 1111", "4111-1111-1111-1111", "4242424242424242", "5555555555554444", "378282246310005"],
)
def test_card_numbers_are_redacted(card: str) -> None:
    redacted = redact_text(f"paid with {card}.")
    assert redacted == f"paid with {REDACTED}."
    assert not any(ch.isdigit() for ch in redacted)


@pytest.mark.parametrize(
    "address",
    [
        "2001:db8:85a3::8a2e:370:7334",
        "2001:0db8:0000:0000:0000:ff00:0042:8329",
        "fe80::1ff:fe23:4567:890a%eth0",
        "2a02:c7f:7e12:3400::1",
    ],
)
@pytest.mark.parametrize("shape", ["client {} refused", "connect to [{}]:8443 failed", "from={}"])
def test_ipv6_addresses_are_redacted(address: str, shape: str) -> None:
    redacted = redact_text(shape.format(address))
    assert redacted == shape.format(REDACTED)


def test_ipv4_mapped_ipv6_addresses_are_redacted() -> None:
    redacted = redact_text("client ::ffff:192.0.2.128 refused")
    assert "192" not in redacted and "128" not in redacted


@pytest.mark.parametrize(
    ("encoded", "rest"),
    [
        ("alice%40example.com", ""),
        ("alice%2540example.com", ""),  # encoded twice
        ("Alice.Name%2Btag%40mail.example.com", "&x=1"),
        ("tr%E1%BA%A7n%40example.vn", ""),
    ],
)
def test_percent_encoded_email_addresses_are_redacted(encoded: str, rest: str) -> None:
    redacted = redact_text(f"GET /v1/unsubscribe?email={encoded}{rest} answered 404")
    assert redacted == f"GET /v1/unsubscribe?email={REDACTED}{rest} answered 404"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("cvv 123", "123"),
        ("CVV: 1234", "1234"),
        ("cvc=987", "987"),
        ("CVV2 321", "321"),
        ("card_cvv=123", "123"),
        ("security code 456", "456"),
        ('cvv": "789', "789"),
        ("CVN 852", "852"),
        ("cid: 1234", "1234"),
        ("Verification value 741", "741"),
        ("verification_code=963", "963"),
    ],
)
def test_card_security_codes_in_text_are_redacted(text: str, code: str) -> None:
    redacted = redact_text(f"refused ({text}) for order 77")
    assert redacted == f"refused ({text.replace(code, REDACTED)}) for order 77"


@pytest.mark.parametrize(
    "text",
    [
        "event 5f0c2a8e-4b1e-4a8e-9d1b-2a7c6f1e9b10 at 2026-11-29T04:00:00Z took 12 ms, attempt 3 of 5",
        "started 12:30:45.123, ratio 3:2:1, next at 04:00:00",
        "std::vector<int> of 12 items, port 8443",
        "retried 123 times; cvv missing; code 404",
        "decided 123 times, a valid cidr 10/8 holds 4096 more, verified 3 of 5",
        "50% of 40 requests, 100%40 is not an address",
        # SMTP replies with their enhanced status codes: the reason a delivery was retried or failed.
        "550 5.1.1 no such user here",
        "535 5.7.8 Authentication credentials invalid",
        "451 4.7.1 greylisted, try again later",
    ],
)
def test_times_ratios_and_counts_are_kept(text: str) -> None:
    assert redact_text(text) == text


@pytest.mark.parametrize(
    "card",
    [
        "4111 - 1111 - 1111 - 1111",
        "4111\n1111\n1111\n1111",
        "4111\u20091111\u20091111\u20091111",
        "4111\u202f1111\u202f1111\u202f1111",
        "４１１１ １１１１ １１１１ １１１１",
        "\u2074\u00b9\u00b9\u00b9\u00b9\u00b9\u00b9\u00b9\u00b9\u00b9\u00b9\u00b9\u00b9\u00b9\u00b9\u00b9",
    ],
)
def test_card_numbers_in_any_shape_are_masked(card: str) -> None:
    redacted = redact_text(f"paid with {card}.")
    digits = "".join(str(unicodedata.digit(ch)) for ch in redacted if unicodedata.digit(ch, None) is not None)
    assert "411111111111" not in digits, redacted


def test_names_and_addresses_are_redacted_by_key_at_any_depth() -> None:
    event: dict[str, Any] = {  # a log event's JSON, of mixed shapes
        "order_id": "FS-2026-000123",
        "currency": "USD",
        "purchaser": {"name": "Nguyễn Văn An", "email": "an.nguyen@example.vn"},
        "shipping": {
            "full_name": "Trần Thị Thử",
            "address": {"line1": "12 Tràng Tiền", "city": "Hà Nội", "country": "VN"},
            "phone": "+84 912 345 678",
        },
        "items": [{"sku": "SPM-DICT-PRO", "quantity": 1}],
        "note": "from an.nguyen@example.vn",
        "name": None,
    }
    redacted = redact(event)
    text = json.dumps(redacted, ensure_ascii=False)
    for personal in ("Nguyễn", "Trần", "Tràng Tiền", "Hà Nội", "example.vn", "912"):
        assert personal not in text
    assert redacted["purchaser"] == REDACTED
    assert redacted["shipping"]["full_name"] == REDACTED
    assert redacted["shipping"]["address"] == REDACTED
    assert redacted["items"] == [{"sku": "SPM-DICT-PRO", "quantity": 1}]
    assert redacted["currency"] == "USD"
    assert redacted["note"] == f"from {REDACTED}"
    assert redacted["name"] is None  # nothing to hide
    assert event["purchaser"]["name"] == "Nguyễn Văn An"  # the original is untouched


def test_ids_and_times_are_kept() -> None:
    text = "event 5f0c2a8e-4b1e-4a8e-9d1b-2a7c6f1e9b10 at 2026-11-29T04:00:00Z took 12 ms, attempt 3 of 5"
    assert redact_text(text) == text


def test_hex_digests_are_kept_whole() -> None:
    # Recipient and subject references are SHA-256 digests; about one in twenty holds 13-19 decimal digits in
    # a row, which was redacted out of the middle of it (a log line an operator could no longer search by).
    digests = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(2_000)]
    assert sum(bool(re.search(r"(?<![0-9])[0-9]{13,19}(?![0-9])", d)) for d in digests) > 20
    for digest in digests:
        for text in (digest, f"recipient_ref={digest}", digest.upper()):
            assert redact_text(text) == text
    # A card number glued to letters is still one.
    assert "4111111111111111" not in redact_text("card_4111111111111111")
    assert "41111111111" not in redact_text("cc4111111111111111x")


def test_uuids_are_kept_whole_and_what_is_around_them_is_redacted() -> None:
    # Event, order and delivery ids: one in eleven has a group of eight digits, or two groups in a row, that
    # the phone shape took ("[redacted]-8b52-4b4a-97b7-50923ceb3ffd").
    rng = random.Random(20261206)
    ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(5_000)]
    assert sum(bool(re.search(r"(?:^|-)[0-9]{4,}(?:-[0-9]{4})*(?:-|$)", i)) for i in ids) > 300
    for identifier in ids:
        for text in (identifier, f"order {identifier} recorded", f"ref=order:{identifier}", identifier.upper()):
            assert redact_text(text) == text
    beside = "delivery 21636369-8b52-4b4a-97b7-50923ceb3ffd to +84 912 345 678, card 4111 1111 1111 1111"
    assert redact_text(beside) == f"delivery 21636369-8b52-4b4a-97b7-50923ceb3ffd to {REDACTED}, card {REDACTED}"
    # An address whose local part is an id is an address.
    assert redact_text("reply+21636369-8b52-4b4a-97b7-50923ceb3ffd@example.com") == REDACTED


class Recipient(BaseModel):
    email: str
    age: int


def test_error_descriptions_do_not_echo_input() -> None:
    with pytest.raises(ValidationError) as refused:
        Recipient.model_validate({"email": "an.nguyen@example.vn", "age": "Nguyễn Văn An"})
    described = describe_error(refused.value)
    assert described.startswith("ValidationError: 1 validation error(s) for Recipient: age: ")
    assert "Nguyễn" not in described and "example.vn" not in described
    assert describe_error(RuntimeError("no mailbox an.nguyen@example.vn")) == f"RuntimeError: no mailbox {REDACTED}"
    assert describe_error(TimeoutError()) == "TimeoutError"


@pytest.fixture
def json_logs() -> Iterator[CapturedLogs]:
    with captured_json_logs("contact") as logs:
        yield logs


def test_a_json_line_carries_the_ids_and_no_personal_data(json_logs: CapturedLogs) -> None:
    log = get_logger("spm.test")
    with bound_contextvars(event_id="evt-1", correlation_id="req-42"):
        log.info(
            "acknowledgement sent to an.nguyen@example.vn",
            recipient="an.nguyen@example.vn",
            name="Nguyễn Văn An",
            detail={"phone": "+84 912 345 678", "sku": "SPM-DICT-PRO"},
            error="SMTP 550 for <an.nguyen@example.vn>",
        )
    [line] = json_logs.lines
    raw = json.dumps(line, ensure_ascii=False)
    assert line["service"] == "contact"
    assert line["event_id"] == "evt-1"
    assert line["correlation_id"] == "req-42"
    assert line["level"] == "info"
    assert "timestamp" in line
    assert line["event"] == f"acknowledgement sent to {REDACTED}"
    assert line["detail"] == {"phone": REDACTED, "sku": "SPM-DICT-PRO"}
    for personal in ("example.vn", "Nguyễn", "912 345"):
        assert personal not in raw


def test_library_lines_and_tracebacks_are_redacted_too(json_logs: CapturedLogs) -> None:
    logging.getLogger("aiosmtplib").warning("recipient an.nguyen@example.vn refused")
    try:
        raise ValueError("bad address an.nguyen@example.vn")
    except ValueError:
        get_logger("spm.test").exception("sending failed")
    records = json_logs.lines
    assert len(records) == 2
    assert records[0]["event"] == f"recipient {REDACTED} refused"
    assert records[0]["service"] == "contact"
    assert "ValueError" in str(records[1]["exception"])
    assert "example.vn" not in json.dumps(records, ensure_ascii=False)
