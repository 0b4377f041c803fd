"""Events the contact service publishes (payloads of the CloudEvents `data`; what it consumes: contact.handlers).

Every event about a contact message carries the purpose `answer-message`: the address it concerns may be
used for nothing else. None carries a message's content.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from spm_common.notifications import NOTIFICATION_REQUESTED, NotificationRequested
from spm_common.privacy import (
    PRIVACY_REQUEST_COMPLETED,
    PRIVACY_REQUEST_CONFIRMED,
    PrivacyRequestCompleted,
    PrivacyRequestConfirmed,
)
from spm_common.retention import RETENTION_PURGED, RetentionPurged

MESSAGE_RECEIVED = "contact.message.received"
MESSAGE_REPLIED = "contact.message.replied"
MESSAGE_CLOSED = "contact.message.closed"
MESSAGE_REOPENED = "contact.message.reopened"
MESSAGES_DELETED = "contact.messages.deleted"
POLICY_PUBLISHED = "privacy-policy.published"


class MessageReceived(BaseModel):
    """A visitor's message was stored. The address is here only so the audit trail can pseudonymise it."""

    message_id: str
    email: str
    locale: str
    received_at: datetime
    # The privacy policy in force when the message was sent (null only before any version was published).
    privacy_policy_version: int | None = None


class MessageReplied(BaseModel):
    """An operator's reply was stored and its e-mail requested from the notifier."""

    message_id: str
    reply_id: str
    replied_at: datetime


class MessageClosed(BaseModel):
    message_id: str
    closed_at: datetime


class MessageReopened(BaseModel):
    """A closed message was opened again by an operator, so it can be answered."""

    message_id: str
    reopened_at: datetime


class MessagesDeleted(BaseModel):
    """Messages (with their replies) reached the end of their retention period and were deleted."""

    count: int
    message_ids: list[str]
    reply_ids: list[str]
    received_before: datetime
    retention_days: int


class PrivacyPolicyPublished(BaseModel):
    """A version of the privacy policy was published; it applies to messages sent from `effective_from`."""

    version: int
    effective_from: datetime
    published_at: datetime
    languages: list[str]
    sha256: str


PUBLISHES: dict[str, type[BaseModel]] = {
    MESSAGE_RECEIVED: MessageReceived,
    MESSAGE_REPLIED: MessageReplied,
    MESSAGE_CLOSED: MessageClosed,
    MESSAGE_REOPENED: MessageReopened,
    MESSAGES_DELETED: MessagesDeleted,
    POLICY_PUBLISHED: PrivacyPolicyPublished,
    NOTIFICATION_REQUESTED: NotificationRequested,
    PRIVACY_REQUEST_CONFIRMED: PrivacyRequestConfirmed,
    # The answer to a confirmed privacy request for this service's messages (contact.privacy_answer).
    PRIVACY_REQUEST_COMPLETED: PrivacyRequestCompleted,
    # What its retention jobs removed, counts only (spm_common.retention).
    RETENTION_PURGED: RetentionPurged,
}
