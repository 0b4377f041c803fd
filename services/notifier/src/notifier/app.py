"""Wiring of the notifier: it consumes notification.requested, sends due deliveries, reports outcomes."""

from fastapi import FastAPI
from spm_common.http import create_app
from spm_common.runtime import Runtime
from spm_common.serve import serve
from spm_common.settings import load

from notifier import deliveries
from notifier.api import router
from notifier.events import PUBLISHES
from notifier.handlers import handlers
from notifier.mail import Composer
from notifier.settings import MIGRATIONS, Settings


def build(settings: Settings) -> Runtime:
    composer = Composer(settings.mail_from)  # compiles every template now: a broken one stops the start

    async def sender(runtime: Runtime) -> None:
        await deliveries.Sender(runtime.pool, settings, composer, runtime.health).run()

    async def delivery_gauges(runtime: Runtime) -> None:
        await deliveries.refresh_gauges(runtime.pool)

    return Runtime(
        settings,
        migrations=MIGRATIONS,
        handlers=handlers(settings),
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
