"""Events the notifier consumes and publishes."""

from typing import Literal

from pydantic import BaseModel, Field
from spm_common.notifications import (
    NOTIFICATION_FAILED,
    NOTIFICATION_REQUESTED,
    NOTIFICATION_SENT,
    NotificationOutcome,
    NotificationRequested,
)

NOTIFICATION_UNSUBSCRIBED = "notification.unsubscribed"


class Unsubscribed(BaseModel):
    """Payload of notification.unsubscribed: the address withdrew its consent to one category of mail."""

    email: str = Field(max_length=254)
    category: Literal["upgrades", "news"]


# Handled in deliveries.py.
CONSUMES = {NOTIFICATION_REQUESTED: NotificationRequested}
PUBLISHES = {
    NOTIFICATION_SENT: NotificationOutcome,
    NOTIFICATION_FAILED: NotificationOutcome,
    NOTIFICATION_UNSUBSCRIBED: Unsubscribed,
}
