"""Wiring of the contact service: settings, runtime, routes, the events it handles, its periodic job."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from spm_common.http import create_app
from spm_common.runtime import Runtime
from spm_common.serve import serve
from spm_common.settings import load

from contact import handlers, policy, privacy, privacy_api, retention
from contact.api import operators, public
from contact.events import PUBLISHES
from contact.settings import MIGRATIONS, Settings
from contact.writer import MessageWriter

# How often the search index's pending entries are merged: at 3,000 messages/s a second's are ~1 MB of the
# 4 MB that would otherwise be merged by (and hold up) one request.
SEARCH_MERGE_SECONDS = 1.0


def build(settings: Settings) -> Runtime:
    async def retention_job(runtime: Runtime) -> None:
        await retention.run_periodically(
            runtime.pool,
            settings.contact_retention_days,
            settings.contact_retention_interval_seconds,
            settings.source,
            runtime.health.loop("contact-retention"),
        )

    async def privacy_sweep(runtime: Runtime) -> None:
        await privacy.sweep_periodically(
            runtime.pool, settings.contact_retention_interval_seconds, runtime.health.loop("privacy-sweep")
        )

    async def search_index(runtime: Runtime) -> None:
        await retention.merge_search_entries_periodically(
            runtime.pool, SEARCH_MERGE_SECONDS, runtime.health.loop("search-index")
        )

    return Runtime(
        settings,
        migrations=MIGRATIONS,
        handlers=handlers.handlers(settings),
        accepts=handlers.accepts,
        publishes=PUBLISHES,
        background=[retention_job, privacy_sweep, search_index],
        scrape=[privacy_api.refresh_gauges],
        description=__doc__ or "",
        relay=settings.contact_outbox_relay == "in-process",
    )


def create(settings: Settings | None = None) -> FastAPI:
    settings = settings or load(Settings)
    runtime = build(settings)
    app = create_app(
        runtime,
        title="SPM contact",
        description="The website's contact form and the operators' inbox.",
        routers=[public, operators, privacy_api.public, privacy_api.operators],
    )
    started = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with started(app):
            # Before the first request, so every message can record the policy version in force.
            async with runtime.pool.acquire() as conn:
                await policy.publish_shipped(conn, settings.source)
            app.state.writer = MessageWriter(runtime.pool, settings.source)
            app.state.writer.start()
            try:
                yield
            finally:
                await app.state.writer.stop()

    app.router.lifespan_context = lifespan
    return app


def main() -> None:
    settings = load(Settings)
    serve(create(settings), settings)
