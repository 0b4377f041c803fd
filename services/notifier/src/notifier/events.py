"""Events the notifier consumes and publishes."""

from typing import Literal

from pydantic import BaseModel, Field
from spm_common.notifications import (
    NOTIFICATION_FAILED,
    NOTIFICATION_REQUESTED,
    NOTIFICATION_SENT,
    NotificationOutcome,
    NotificationRequested,
    outcome_routing_key,
)
from spm_common.privacy import (
    PRIVACY_REQUEST_COMPLETED,
    PRIVACY_REQUEST_CONFIRMED,
    PrivacyRequestCompleted,
    PrivacyRequestConfirmed,
)
from spm_common.retention import RETENTION_PURGED, RetentionPurged

NOTIFICATION_UNSUBSCRIBED = "notification.unsubscribed"


class Unsubscribed(BaseModel):
    """Payload of notification.unsubscribed: the address withdrew its consent to one category of mail."""

    email: str = Field(max_length=254)
    category: Literal["upgrades", "news"]


# notification.requested is handled in deliveries.py; privacy.request.confirmed answered in privacy_answer.py.
CONSUMES = {NOTIFICATION_REQUESTED: NotificationRequested, PRIVACY_REQUEST_CONFIRMED: PrivacyRequestConfirmed}
PUBLISHES: dict[str, type[BaseModel]] = {
    NOTIFICATION_SENT: NotificationOutcome,
    NOTIFICATION_FAILED: NotificationOutcome,
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
