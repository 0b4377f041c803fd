"""The CloudEvents 1.0 envelope (structured JSON mode) every event on the exchange travels in."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, NamedTuple

import aio_pika
import orjson
import pydantic_core
import structlog
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

CONTENT_TYPE = "application/cloudevents+json"
ACCEPTED_CONTENT_TYPES = frozenset({CONTENT_TYPE, "application/json", ""})
# Most events are a few hundred bytes; the bound is set by the largest legitimate one, the e-mail that answers
# a privacy access request with its attachment (up to ATTACHMENTS_MAX_BYTES, spm_common.notifications).
MAX_EVENT_BYTES = 8_000_000

# A correlation id is logged and carried into every event a request or an event causes: only a plain token
# is taken from outside (an HTTP client's X-Request-ID, an event's `correlationid`), so no address, markup or
# line break travels on. The system's own are request ids and UUIDs.
CORRELATION_ID_PATTERN = r"[A-Za-z0-9._-]{1,64}"
_CORRELATION_ID_RE = re.compile(CORRELATION_ID_PATTERN)

Purpose = Literal[
    "answer-message", "fulfil-order", "license-recovery", "free-upgrade", "product-news", "privacy-request"
]


class Payload(BaseModel):
    """The `data` of one kind of event. `event_type` is that kind's CloudEvents `type` (and routing key): a
    consumer's handlers are keyed by the payload model (spm_common.handlers), so the type is said once, here."""

    event_type: ClassVar[str]


class CloudEvent(BaseModel):
    """One event. `correlationid` and `purpose` are CloudEvents extension attributes of this system."""

    model_config = ConfigDict(extra="allow", frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1, max_length=200)
    type: str = Field(min_length=1, max_length=200, pattern=r"^[a-z0-9][a-z0-9._-]*$")
    source: str = Field(min_length=1, max_length=500)
    time: AwareDatetime | None = None
    datacontenttype: str = "application/json"
    dataschema: str | None = None
    subject: str | None = Field(default=None, max_length=500)
    correlationid: str | None = Field(
        default=None,
        description=f"Ties together the events one request or event caused: {CORRELATION_ID_PATTERN}. Any other"
        " value is dropped on receipt; the event itself is taken.",
    )
    purpose: Purpose | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("correlationid")
    @classmethod
    def _plain_token_or_none(cls, value: str | None) -> str | None:
        """Dropped, not refused: an order must not be dead-lettered over a tracing attribute."""
        return value if value is None or _CORRELATION_ID_RE.fullmatch(value) else None

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", exclude_none=True))

    @classmethod
    def parse(cls, body: bytes) -> CloudEvent:
        """Validate an incoming body; raises pydantic.ValidationError (or ValueError) on anything else."""
        if len(body) > MAX_EVENT_BYTES:
            raise ValueError(f"event body of {len(body)} bytes exceeds {MAX_EVENT_BYTES}")
        return cls.model_validate(orjson.loads(body))


def new_event(
    type: str,
    source: str,
    data: BaseModel | dict[str, Any],
    *,
    correlation_id: str | None = None,
    purpose: Purpose | None = None,
    event_id: str | None = None,
) -> CloudEvent:
    """A new event; its correlation id is, unless given, the one of the request or event being handled."""
    payload = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
    if correlation_id is None:
        correlation_id = structlog.contextvars.get_contextvars().get("correlation_id")
    return CloudEvent(
        id=event_id or str(uuid.uuid4()),
        type=type,
        source=source,
        time=datetime.now(UTC),
        correlationid=correlation_id,
        purpose=purpose,
        data=payload,
    )


class OutboxRow(NamedTuple):
    """An event as a service's outbox stores it and its relay publishes it: id, type, body, and the routing key
    where it is not the type (the notifier's outcomes go to `notification.sent.<requester>`, so each service
    binds only its own: docs/architecture.md, "Routing keys")."""

    id: str
    type: str
    body: bytes
    routing_key: str | None = None


def new_event_body(
    type: str,
    source: str,
    data: BaseModel | dict[str, Any],
    *,
    correlation_id: str | None = None,
    purpose: Purpose | None = None,
    event_id: str | None = None,
    routing_key: str | None = None,
) -> OutboxRow:
    """A new event, its body byte for byte what `new_event(...).to_json()` makes of the same arguments
    (a test holds them equal), without building and validating a `CloudEvent`: for hot paths whose `data`
    the code itself put together from values already validated (a payload model is serialised as it is, not
    dumped to a dict first)."""
    if correlation_id is None:
        correlation_id = structlog.contextvars.get_contextvars().get("correlation_id")
    event_id = event_id or str(uuid.uuid4())
    # CloudEvent's fields in its order, the unset ones left out as `to_json` leaves them out, serialised by the
    # serialiser pydantic uses for the model (times written as the model writes them).
    envelope: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id,
        "type": type,
        "source": source,
        "time": datetime.now(UTC),
        "datacontenttype": "application/json",
    }
    if correlation_id is not None:
        envelope["correlationid"] = correlation_id
    if purpose is not None:
        envelope["purpose"] = purpose
    envelope["data"] = data
    return OutboxRow(event_id, type, pydantic_core.to_json(envelope), routing_key)


def amqp_message(event: CloudEvent, user_id: str | None = None) -> aio_pika.Message:
    """The event as another system publishes it: CONTRACT section 3's properties, persistent, and `user_id`
    (the publisher's login, which the broker checks) when given."""
    return aio_pika.Message(
        event.to_json(),
        content_type=CONTENT_TYPE,
        message_id=event.id,
        type=event.type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        user_id=user_id,
    )
