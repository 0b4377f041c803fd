"""What the audit service consumes: every event on the exchange, appended to the trail as it came, and, after
that, the two it acts on, each validated into its model by the consumer first (spm_common.handlers): page views
(counted in the page-view table) and confirmed privacy requests (answered). Neither is dead-lettered when it
does not validate: it is in the trail already, and a dead-letter queue would keep the address the audit does
not keep."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from spm_common.db import Connection
from spm_common.envelope import CloudEvent
from spm_common.handlers import Handlers, Received
from spm_common.privacy import PRIVACY_REQUEST_COMPLETED, DeadLetterEraser, PrivacyRequestConfirmed

from audit import pageviews, privacy_answer, trail
from audit.events import PAGE_VIEWED, PageViewed
from audit.settings import Settings


def handlers(settings: Settings, key: bytes, salts: pageviews.Salts, dead_letters: DeadLetterEraser) -> Handlers:
    # A page-view event is in the trail like every event, reduced to what the page-view table keeps; a privacy
    # request's answer without the person's data it exports.
    reducers = {PAGE_VIEWED: pageviews.trail_payload, PRIVACY_REQUEST_COMPLETED: privacy_answer.trail_payload}

    async def on_every_event(conn: Connection, events: Sequence[CloudEvent]) -> None:
        await trail.append(conn, events, key, reducers)

    async def on_page_views(conn: Connection, views: Sequence[Received[PageViewed]]) -> None:
        await pageviews.ingest_events(conn, views, salts)

    # The request's own entry is made (by `on_every_event`, which runs first) with the person's key before
    # erasure destroys it.
    return (
        Handlers(every=on_every_event)
        .on_batch(PageViewed, on_page_views, on_invalid=pageviews.invalid_event)
        .on(
            PrivacyRequestConfirmed,
            functools.partial(
                privacy_answer.on_confirmed, secret=key, source=settings.source, dead_letters=dead_letters
            ),
            on_invalid=privacy_answer.not_answered,
        )
    )
