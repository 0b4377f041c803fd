"""Events the notifier consumes and publishes."""

from spm_common.notifications import NOTIFICATION_FAILED, NOTIFICATION_SENT, NotificationOutcome

PUBLISHES = {NOTIFICATION_SENT: NotificationOutcome, NOTIFICATION_FAILED: NotificationOutcome}
