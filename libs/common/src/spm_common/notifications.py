"""`notification.requested`: how any service asks the notifier to send one e-mail. The notifier owns its
meaning; it lives here because every service that sends mail publishes it."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Self

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from spm_common.envelope import Payload, Purpose

NOTIFICATION_REQUESTED = "notification.requested"
NOTIFICATION_SENT = "notification.sent"
NOTIFICATION_FAILED = "notification.failed"
Locale = Literal["vi", "en"]
# Attachments are for the answer to a privacy access request (`personal-data.json`): a few, of a type on this
# list, and bounded as they travel (their JSON-encoded size), so the event stays under MAX_EVENT_BYTES and the
# notifier's stored request stays bounded too.
AttachmentType = Literal["application/json"]
ATTACHMENTS_MAX = 4
ATTACHMENTS_MAX_BYTES = 5_000_000


class Recipient(BaseModel):
    model_config = ConfigDict(frozen=True)

    email: str = Field(min_length=3, max_length=254)
    name: str | None = Field(default=None, max_length=200)


class Attachment(BaseModel):
    """A file attached to the e-mail, its content as text (UTF-8 on the wire)."""

    model_config = ConfigDict(frozen=True)

    # A plain file name: it goes into a MIME header as is.
    filename: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    content_type: AttachmentType
    content: str = Field(max_length=ATTACHMENTS_MAX_BYTES)


class NotificationRequested(Payload):
    """One e-mail to one person, for one purpose, from one template."""

    model_config = ConfigDict(frozen=True)
    event_type: ClassVar[str] = NOTIFICATION_REQUESTED

    purpose: Purpose
    template: str = Field(min_length=1, max_length=100, pattern=r"^[a-z0-9-]+$")
    locale: Locale = "en"
    recipient: Recipient
    context: dict[str, Any] = Field(default_factory=dict)
    # Set by the requester when later mail must thread under this one (In-Reply-To / References).
    message_id: str | None = Field(default=None, max_length=250)
    in_reply_to: str | None = Field(default=None, max_length=250)
    # The requester's own reference, echoed in notification.sent / notification.failed.
    reference: str | None = Field(default=None, max_length=200)
    # Left out of the payload when empty, so the requests built by hand on hot paths (the same fields without
    # it) stay byte for byte what this model makes.
    attachments: list[Attachment] = Field(default_factory=list, max_length=ATTACHMENTS_MAX, exclude_if=lambda v: not v)

    @model_validator(mode="after")
    def _attachments_bounded(self) -> Self:
        if self.attachments:
            size = sum(len(orjson.dumps(a.content)) for a in self.attachments)
            if size > ATTACHMENTS_MAX_BYTES:
                raise ValueError(f"attachments of {size} bytes exceed {ATTACHMENTS_MAX_BYTES}")
        return self


class NotificationOutcome(Payload):
    """Payload of notification.sent and notification.failed: no address, no content."""

    request_event_id: str
    reference: str | None = None
    purpose: Purpose
    template: str
    status: Literal["sent", "failed"]
    error: str | None = None


class NotificationSent(NotificationOutcome):
    """`notification.sent`: the SMTP server accepted the e-mail."""

    event_type: ClassVar[str] = NOTIFICATION_SENT


class NotificationFailed(NotificationOutcome):
    """`notification.failed`: the e-mail was refused (the notifier's rules, or the SMTP server) or its retries
    ran out; `error` says why. It will not be sent."""

    event_type: ClassVar[str] = NOTIFICATION_FAILED


def message_id_for(key: str, mail_from: str) -> str:
    """A stable RFC 5322 Message-ID for `key` in the sender's domain."""
    domain = mail_from.rsplit("@", 1)[-1].strip(" >") or "localhost"
    return f"<{key}@{domain}>"


def outcome_routing_key(event_type: str, requester: str) -> str:
    """The routing key of an outcome (`notification.sent` or `notification.failed`) of a request `requester`
    (a service name) made: `notification.sent.contact`. The event's type stays `notification.sent`; the key
    lets each requester bind only its own outcomes, and the audit still sees all of them through `#`."""
    return f"{event_type}.{requester}"
