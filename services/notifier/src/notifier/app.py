"""Wiring of the notifier: it consumes notification.requested, sends due deliveries, reports outcomes."""

from fastapi import FastAPI
from spm_common.http import create_app
from spm_common.notifications import NOTIFICATION_REQUESTED
from spm_common.runtime import Runtime
from spm_common.serve import serve
from spm_common.settings import load

from notifier import deliveries
from notifier.events import PUBLISHES
from notifier.settings import MIGRATIONS, Settings


def build(settings: Settings) -> Runtime:
    async def on_request(conn, event):  # type: ignore[no-untyped-def]
        await deliveries.record(conn, event, settings)

    async def sender(runtime: Runtime) -> None:
        await deliveries.sender_loop(runtime.pool, settings, settings.source)

    return Runtime(
        settings,
        migrations=MIGRATIONS,
        handlers={NOTIFICATION_REQUESTED: on_request},
        publishes=PUBLISHES,
        background=[sender],
        description=__doc__ or "",
    )


def create(settings: Settings | None = None) -> FastAPI:
    settings = settings or load(Settings)
    return create_app(
        build(settings),
        title="SPM notifier",
        description="Every e-mail the system sends, once, in Vietnamese or English.",
    )


def main() -> None:
    settings = load(Settings)
    serve(create(settings), settings)
