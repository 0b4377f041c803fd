"""What the orders service consumes, each payload model with its handler: orders in, releases and news to fan
out, unsubscriptions, and privacy requests to answer. The consumer validates each payload into its model
first (spm_common.handlers); these only turn it into a call."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from spm_common.db import Connection
from spm_common.handlers import Handlers, Meta, Received
from spm_common.logging import get_logger
from spm_common.privacy import DeadLetterEraser, PrivacyRequestConfirmed

from orders import fanout, orders, privacy_answer, store
from orders.events import NotificationUnsubscribed, OrderPlaced, ProductAnnounced, UpgradeReleased
from orders.settings import Settings

log = get_logger(__name__)


def handlers(settings: Settings) -> Handlers:
    config = orders.config_of(settings)

    async def on_orders(conn: Connection, placed: Sequence[Received[OrderPlaced]]) -> None:
        incoming = [orders.Incoming.from_event(order, meta) for order, meta in placed]
        results = await orders.place_orders(conn, incoming, config)
        log.debug("orders handled", count=len(results))

    async def on_unsubscribed(conn: Connection, left: NotificationUnsubscribed, meta: Meta) -> None:
        if left.category == "upgrades":
            await store.unsubscribe_upgrades(conn, left.email)
        else:
            await store.withdraw_news_consent(conn, left.email)

    return (
        Handlers()
        .on_batch(OrderPlaced, on_orders)
        .on(UpgradeReleased, fanout.record_release)
        .on(ProductAnnounced, fanout.record_announcement)
        .on(NotificationUnsubscribed, on_unsubscribed)
        .on(
            PrivacyRequestConfirmed,
            functools.partial(
                privacy_answer.on_confirmed,
                source=settings.source,
                hash_key=settings.hash_key(),
                dead_letters=DeadLetterEraser.of(settings),
            ),
        )
    )
