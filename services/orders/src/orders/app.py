"""Wiring of the orders service: orders in (event and webhook), license keys out, purchaser requests,
upgrade and news fan-out. Every delivery is scrubbed of card data before anything else sees it."""

import functools

from fastapi import FastAPI
from spm_common import cards
from spm_common.consumer import Handler, batched
from spm_common.db import Connection
from spm_common.envelope import CloudEvent
from spm_common.http import create_app
from spm_common.logging import get_logger
from spm_common.privacy import PRIVACY_REQUEST_CONFIRMED, DeadLetterEraser
from spm_common.runtime import Runtime
from spm_common.serve import serve
from spm_common.settings import load

from orders import fanout, orders, privacy_answer, purchasers, releases, retention, store
from orders.api import router
from orders.events import (
    NOTIFICATION_UNSUBSCRIBED,
    ORDER_PLACED,
    PRODUCT_ANNOUNCED,
    PUBLISHES,
    UPGRADE_RELEASED,
    NotificationUnsubscribed,
    ProductAnnounced,
    UpgradeReleased,
    parse,
)
from orders.settings import MIGRATIONS, Settings

log = get_logger(__name__)


def handlers(settings: Settings) -> dict[str, Handler]:
    config = orders.config_of(settings)

    @batched
    async def on_orders(conn: Connection, events: list[CloudEvent]) -> None:
        results = await orders.place_orders(conn, [orders.Incoming.from_event(e) for e in events], config)
        log.debug("orders handled", count=len(results))

    async def on_release(conn: Connection, event: CloudEvent) -> None:
        await fanout.record_release(conn, event, parse(UpgradeReleased, event.data))

    async def on_announcement(conn: Connection, event: CloudEvent) -> None:
        await fanout.record_announcement(conn, event, parse(ProductAnnounced, event.data))

    async def on_unsubscribed(conn: Connection, event: CloudEvent) -> None:
        left = parse(NotificationUnsubscribed, event.data)
        if left.category == "upgrades":
            await store.unsubscribe_upgrades(conn, left.email)
        else:
            await store.withdraw_news_consent(conn, left.email)

    return {
        ORDER_PLACED: on_orders,
        UPGRADE_RELEASED: on_release,
        PRODUCT_ANNOUNCED: on_announcement,
        NOTIFICATION_UNSUBSCRIBED: on_unsubscribed,
        PRIVACY_REQUEST_CONFIRMED: functools.partial(
            privacy_answer.on_confirmed,
            source=settings.source,
            hash_key=settings.hash_key(),
            dead_letters=DeadLetterEraser.of(settings),
        ),
    }


async def purchaser_retention(runtime: Runtime) -> None:
    settings = runtime.settings
    assert isinstance(settings, Settings)
    await retention.run_periodically(
        runtime.pool,
        settings.orders_purchaser_retention_years,
        hash_key=settings.hash_key(),
        source=settings.source,
        health=runtime.health.loop("purchaser-retention"),
    )


def build(settings: Settings) -> Runtime:
    return Runtime(
        settings,
        migrations=MIGRATIONS,
        handlers=handlers(settings),
        publishes=PUBLISHES,
        background=[fanout.worker, purchaser_retention],
        scrub=cards.scrub_body,
        description=__doc__ or "",
    )


def create(settings: Settings | None = None) -> FastAPI:
    settings = settings or load(Settings)
    return create_app(
        build(settings),
        title="SPM orders",
        description="Orders in, license keys out, purchaser requests and upgrade fan-out.",
        routers=[router, releases.router, purchasers.router],
    )


def main() -> None:
    settings = load(Settings)
    serve(create(settings), settings)
