"""Events the notifier publishes (what it consumes: notifier.handlers)."""

from typing import Literal

from pydantic import BaseModel, Field
from spm_common.notifications import (
    NOTIFICATION_FAILED,
    NOTIFICATION_SENT,
    NotificationFailed,
    NotificationSent,
    outcome_routing_key,
)
from spm_common.privacy import PRIVACY_REQUEST_COMPLETED, PrivacyRequestCompleted
from spm_common.retention import RETENTION_PURGED, RetentionPurged

NOTIFICATION_UNSUBSCRIBED = "notification.unsubscribed"


class Unsubscribed(BaseModel):
    """Payload of notification.unsubscribed: the address withdrew its consent to one category of mail."""

    email: str = Field(max_length=254)
    category: Literal["upgrades", "news"]


PUBLISHES: dict[str, type[BaseModel]] = {
    NOTIFICATION_SENT: NotificationSent,
    NOTIFICATION_FAILED: NotificationFailed,
    NOTIFICATION_UNSUBSCRIBED: Unsubscribed,
    PRIVACY_REQUEST_COMPLETED: PrivacyRequestCompleted,
    # What its retention jobs removed, counts only (spm_common.retention).
    RETENTION_PURGED: RetentionPurged,
}
# Each outcome goes to the service that asked for the e-mail: `notification.sent.contact`, `.orders`
# (deliveries._outcome; the requester follows from the purpose, policy.REQUESTER_OF).
ROUTING_KEYS = {
    NOTIFICATION_SENT: outcome_routing_key(NOTIFICATION_SENT, "{requester}"),
    NOTIFICATION_FAILED: outcome_routing_key(NOTIFICATION_FAILED, "{requester}"),
}
