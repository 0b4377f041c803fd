"""Events the contact service publishes (payloads of the CloudEvents `data`)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from spm_common.notifications import NOTIFICATION_REQUESTED, NotificationRequested

MESSAGE_RECEIVED = "contact.message.received"


class MessageReceived(BaseModel):
    """A visitor's message was stored. The address is here only so the audit trail can pseudonymise it."""

    message_id: str
    email: str
    locale: str
    received_at: datetime


PUBLISHES = {MESSAGE_RECEIVED: MessageReceived, NOTIFICATION_REQUESTED: NotificationRequested}
