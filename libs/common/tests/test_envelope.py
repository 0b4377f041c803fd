"""The envelope's fast path writes exactly what the model does."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import structlog
from spm_common.envelope import CloudEvent, Purpose, new_event, new_event_body
from spm_common.notifications import NotificationRequested, Recipient

DATA: dict[str, Any] = {
    "message_id": "0b7e3f0e-6a51-4f43-9b8e-0c7a4b1d2e3f",
    "name": "Trần Văn Thử",
    "received_at": datetime(2026, 11, 29, 4, 7, 30, 123456, tzinfo=UTC),
    "nested": {"subject": None, "items": [1, 2.5, True]},
    "missing": None,
}


@pytest.mark.parametrize(("correlation_id", "purpose"), [("req-1", "answer-message"), (None, None)])
def test_new_event_body_is_byte_for_byte_what_new_event_makes(
    correlation_id: str | None, purpose: Purpose | None
) -> None:
    row = new_event_body(
        "contact.message.received", "urn:spm:contact", DATA, correlation_id=correlation_id, purpose=purpose
    )
    event_id, body = row.id, row.body
    assert row.type == "contact.message.received" and row.routing_key is None
    stored = CloudEvent.parse(body)
    made = new_event(
        "contact.message.received", "urn:spm:contact", DATA, correlation_id=correlation_id, purpose=purpose
    )
    assert stored.id == event_id
    assert body == made.model_copy(update={"id": event_id, "time": stored.time}).to_json()


def test_new_event_body_takes_the_correlation_id_of_the_request_being_handled() -> None:
    with structlog.contextvars.bound_contextvars(correlation_id="req-7"):
        body = new_event_body("probe.ping", "urn:spm:test", {}).body
    assert CloudEvent.parse(body).correlationid == "req-7"


def test_only_a_plain_token_is_taken_as_a_correlation_id() -> None:
    def received(correlationid: str) -> str | None:
        body = orjson.dumps(
            {"id": "e-1", "type": "probe.ping", "source": "https://shop.example", "correlationid": correlationid}
        )
        return CloudEvent.parse(body).correlationid

    for token in ("req-7", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "a.b_C", "x" * 64):
        assert received(token) == token
    for odd in ("", "x" * 65, "a b", "buyer@example.com", "id\r\nBcc: x", "<b>", "tr\u00e1ce", "x" * 300):
        assert received(odd) is None, odd


def test_new_event_body_of_a_payload_model_with_its_own_id_is_what_new_event_makes() -> None:
    request = NotificationRequested(
        purpose="fulfil-order",
        template="order-confirmation",
        locale="vi",
        recipient=Recipient(email="an@example.vn", name="Nguyễn Văn An"),
        context={"order_id": "FS-1", "total": "49.00", "items": [{"license_keys": ["7KQ2M-XW4PD"]}]},
        reference="order:1",
    )
    row = new_event_body(
        "notification.requested", "urn:spm:orders", request, purpose="fulfil-order", event_id="derived-1"
    )
    event_id, body = row.id, row.body
    made = new_event("notification.requested", "urn:spm:orders", request, purpose="fulfil-order", event_id="derived-1")
    assert event_id == "derived-1"
    assert body == made.model_copy(update={"time": CloudEvent.parse(body).time}).to_json()
