"""`notification.requested`: how any service asks the notifier to send one e-mail. The notifier owns its
meaning; it lives here because every service that sends mail publishes it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from spm_common.envelope import Purpose

NOTIFICATION_REQUESTED = "notification.requested"
NOTIFICATION_SENT = "notification.sent"
NOTIFICATION_FAILED = "notification.failed"
Locale = Literal["vi", "en"]


class Recipient(BaseModel):
    model_config = ConfigDict(frozen=True)

    email: str = Field(min_length=3, max_length=254)
    name: str | None = Field(default=None, max_length=200)


class NotificationRequested(BaseModel):
    """One e-mail to one person, for one purpose, from one template."""

    model_config = ConfigDict(frozen=True)

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


class NotificationOutcome(BaseModel):
    """Payload of notification.sent and notification.failed: no address, no content."""

    request_event_id: str
    reference: str | None = None
    purpose: Purpose
    template: str
    status: Literal["sent", "failed"]
    error: str | None = None


def message_id_for(key: str, mail_from: str) -> str:
    """A stable RFC 5322 Message-ID for `key` in the sender's domain."""
    domain = mail_from.rsplit("@", 1)[-1].strip(" >") or "localhost"
    return f"<{key}@{domain}>"
