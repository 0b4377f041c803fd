"""What the notifier consumes, each payload model with its handler: requests for e-mail, and privacy requests
to answer. The consumer validates each payload into its model first (spm_common.handlers)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from spm_common.db import Connection
from spm_common.handlers import Handlers, Received
from spm_common.notifications import NotificationRequested
from spm_common.privacy import DeadLetterEraser, PrivacyRequestConfirmed

from notifier import deliveries, privacy_answer
from notifier.settings import Settings


def handlers(settings: Settings) -> Handlers:
    publishers = settings.publishers()

    async def on_requests(conn: Connection, requests: Sequence[Received[NotificationRequested]]) -> None:
        await deliveries.record(conn, requests, settings, publishers)

    return (
        Handlers()
        .on_batch(NotificationRequested, on_requests)
        .on(
            PrivacyRequestConfirmed,
            functools.partial(
                privacy_answer.on_confirmed, settings=settings, dead_letters=DeadLetterEraser.of(settings)
            ),
        )
    )
