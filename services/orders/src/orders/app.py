"""Wiring of the orders service: orders in (event and webhook), license keys out, purchaser requests,
upgrade and news fan-out. Every delivery is scrubbed of card data before anything else sees it."""

from fastapi import FastAPI
from spm_common import cards
from spm_common.http import create_app
from spm_common.runtime import Runtime
from spm_common.serve import serve
from spm_common.settings import load

from orders import fanout, purchasers, releases, retention
from orders.api import router
from orders.events import PUBLISHES
from orders.handlers import handlers
from orders.settings import MIGRATIONS, Settings


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
