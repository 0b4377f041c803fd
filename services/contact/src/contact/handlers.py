"""What the contact service consumes, each payload model with its handler: the notifier's reports on the
e-mails it asked for (a reply's delivery status, a privacy request's acknowledgement), every service's answer
to a privacy request, and the confirmed requests themselves, which it answers for its own messages like every
other service. The consumer validates each payload into its model first (spm_common.handlers)."""

from __future__ import annotations

import functools

from spm_common.db import Connection
from spm_common.envelope import CloudEvent
from spm_common.handlers import Handlers, Meta
from spm_common.notifications import NotificationFailed, NotificationOutcome, NotificationSent, outcome_routing_key
from spm_common.privacy import DeadLetterEraser, PrivacyRequestCompleted, PrivacyRequestConfirmed

from contact import inbox, privacy, privacy_answer
from contact.settings import Settings


async def on_mail_outcome(conn: Connection, outcome: NotificationOutcome, meta: Meta) -> None:
    if meta.purpose == privacy.PURPOSE:
        await privacy.record_outcome(conn, outcome, meta)
    else:
        await inbox.record_outcome(conn, outcome, meta)


def handlers(settings: Settings) -> Handlers:
    # The notifier routes each outcome to its requester (`notification.sent.contact`): the queue binds those
    # keys, so the outcomes of the orders' e-mails never reach this service (docs/architecture.md, "Routing
    # keys").
    sent, failed = NotificationSent, NotificationFailed
    return (
        Handlers()
        .on(sent, on_mail_outcome, routing_key=outcome_routing_key(sent.event_type, "contact"))
        .on(failed, on_mail_outcome, routing_key=outcome_routing_key(failed.event_type, "contact"))
        .on(PrivacyRequestCompleted, functools.partial(privacy.record_answer, source=settings.source))
        .on(
            PrivacyRequestConfirmed,
            functools.partial(
                privacy_answer.on_confirmed, source=settings.source, dead_letters=DeadLetterEraser.of(settings)
            ),
        )
    )


def accepts(event: CloudEvent) -> bool:
    """Only this service's outcomes are bound; the check stays for an outcome published before the notifier
    routed them, and for the privacy requests' events (purpose privacy-request: the confirmed ones this service
    also answers)."""
    return inbox.concerns_contact(event) or privacy.concerns_privacy(event)
