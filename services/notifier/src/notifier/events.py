"""Events the notifier consumes and publishes."""

from typing import Literal

from pydantic import BaseModel, Field
from spm_common.notifications import NOTIFICATION_FAILED, NOTIFICATION_SENT, NotificationOutcome
from spm_common.privacy import PRIVACY_REQUEST_COMPLETED, PrivacyRequestCompleted

# Consumed: notification.requested (spm_common.notifications.NotificationRequested), handled in deliveries.py,
# and privacy.request.confirmed (spm_common.privacy), answered in privacy_answer.py.
NOTIFICATION_UNSUBSCRIBED = "notification.unsubscribed"


class Unsubscribed(BaseModel):
    """Payload of notification.unsubscribed: the address withdrew its consent to one category of mail."""

    email: str = Field(max_length=254)
    category: Literal["upgrades", "news"]


PUBLISHES = {
    NOTIFICATION_SENT: NotificationOutcome,
    NOTIFICATION_FAILED: NotificationOutcome,
    NOTIFICATION_UNSUBSCRIBED: Unsubscribed,
    PRIVACY_REQUEST_COMPLETED: PrivacyRequestCompleted,
}
