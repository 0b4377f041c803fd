"""Wiring of the notifier: it consumes notification.requested, sends due deliveries, reports outcomes."""

import functools

from fastapi import FastAPI
from spm_common.consumer import batched
from spm_common.db import Connection
from spm_common.envelope import CloudEvent
from spm_common.http import create_app
from spm_common.notifications import NOTIFICATION_REQUESTED
from spm_common.privacy import PRIVACY_REQUEST_CONFIRMED, DeadLetterEraser
from spm_common.runtime import Runtime
from spm_common.serve import serve
from spm_common.settings import load

from notifier import deliveries, privacy_answer
from notifier.api import router
from notifier.events import PUBLISHES
from notifier.mail import Composer
from notifier.settings import MIGRATIONS, Settings


def build(settings: Settings) -> Runtime:
    composer = Composer(settings.mail_from)  # compiles every template now: a broken one stops the start

    @batched
    async def on_requests(conn: Connection, events: list[CloudEvent]) -> None:
        await deliveries.record(conn, events, settings)

    async def sender(runtime: Runtime) -> None:
        await deliveries.Sender(runtime.pool, settings, composer, runtime.health).run()

    async def delivery_gauges(runtime: Runtime) -> None:
        await deliveries.refresh_gauges(runtime.pool)

    return Runtime(
        settings,
        migrations=MIGRATIONS,
        handlers={
            NOTIFICATION_REQUESTED: on_requests,
            PRIVACY_REQUEST_CONFIRMED: functools.partial(
                privacy_answer.on_confirmed, settings=settings, dead_letters=DeadLetterEraser.of(settings)
            ),
        },
        publishes=PUBLISHES,
        background=[sender],
        scrape=[delivery_gauges],
        description=__doc__ or "",
    )


def create(settings: Settings | None = None) -> FastAPI:
    settings = settings or load(Settings)
    return create_app(
        build(settings),
        title="SPM notifier",
        description="Every e-mail the system sends, once, in Vietnamese or English; one-click unsubscribe.",
        routers=[router],
    )


def main() -> None:
    settings = load(Settings)
    serve(create(settings), settings)
