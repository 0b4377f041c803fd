"""Wiring of the audit service: every event on the exchange appended to the hash-chained trail, page views
from the website and the log shipper, checkpoints of the chain and the rotation of the visitors' salts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from fastapi import FastAPI
from spm_common import cards
from spm_common.clientaddr import parse_networks
from spm_common.health import LoopHealth
from spm_common.http import create_app
from spm_common.logging import get_logger
from spm_common.privacy import DeadLetterEraser
from spm_common.redaction import describe_error
from spm_common.runtime import Runtime
from spm_common.serve import serve
from spm_common.settings import load

from audit import pageviews, trail
from audit.api import AuditState, operator_router, pageviews_router
from audit.events import PUBLISHES
from audit.handlers import handlers
from audit.settings import MIGRATIONS, Settings

log = get_logger(__name__)
SALT_ROTATION_SECONDS = 600.0


def assemble(settings: Settings) -> tuple[Runtime, AuditState]:
    key = settings.subject_key()
    signer = settings.checkpoint_signer()
    salts = pageviews.Salts()
    writer = pageviews.PageViewWriter(salts)

    async def write_page_views(runtime: Runtime) -> None:
        await writer.run(lambda: runtime.pool, runtime.health.loop("page-view-writer"))

    async def checkpoints(runtime: Runtime) -> None:
        async def once() -> str | None:
            async with runtime.pool.acquire() as conn:
                outcome = await trail.checkpoint(conn, signer)
            if outcome.ok:
                log.info("audit checkpoint", seq=outcome.head_seq, hash=outcome.head_hash, count=outcome.checked)
                return None
            log.error("audit trail broken", seq=outcome.broken_seq, error=outcome.problem)
            # A broken chain fails the loop too, so the gauge an alert watches moves.
            return f"audit trail broken at {outcome.broken_seq}: {outcome.problem}"

        await _every(settings.audit_checkpoint_seconds, once, runtime.health.loop("audit-checkpoint"))

    async def rotate_salts(runtime: Runtime) -> None:
        async def once() -> None:
            async with runtime.pool.acquire() as conn:
                deleted = await salts.rotate(conn)
                closed = await pageviews.close_days(conn, datetime.now(UTC).date())
            if deleted:
                log.info("visitor salts destroyed", count=deleted)
            if closed:
                log.info("page-view days closed to their aggregates", count=closed)

        await _every(SALT_ROTATION_SECONDS, once, runtime.health.loop("salt-rotation"))

    runtime = Runtime(
        settings,
        migrations=MIGRATIONS,
        handlers=handlers(settings, key, salts, DeadLetterEraser.of(settings)),
        publishes=PUBLISHES,
        background=[write_page_views, checkpoints, rotate_salts],
        scrub=cards.scrub_body,
        description="Every event on the exchange, appended to the hash-chained audit trail; page views from "
        "the log shipper (site.page.viewed); the answer to each confirmed privacy request "
        "(privacy.request.confirmed, answered with privacy.request.completed).",
    )
    state = AuditState(
        key=key,
        trusted_proxies=parse_networks(settings.trusted_proxies),
        writer=writer,
        checkpoint_keys=frozenset({signer.public_key}),
    )
    return runtime, state


async def _every(seconds: float, job: Callable[[], Awaitable[str | None]], health: LoopHealth) -> None:
    """Run `job` now and then every `seconds`; a failure (an exception, or the problem the job returns) is
    reported to `health` and the next round tries again."""
    while True:
        try:
            problem = await job()
        except Exception as exc:
            problem = describe_error(exc)
        if problem is None:
            health.ok()
        else:
            health.failed(problem)
        await asyncio.sleep(seconds)


def build(settings: Settings) -> Runtime:
    return assemble(settings)[0]


def create(settings: Settings | None = None) -> FastAPI:
    settings = settings or load(Settings)
    runtime, state = assemble(settings)
    app = create_app(
        runtime,
        title="SPM audit",
        description="A tamper-evident trail of every event, and page-view trends that know no one.",
        routers=[pageviews_router, operator_router],
    )
    app.state.audit = state
    return app


def main() -> None:
    settings = load(Settings)
    serve(create(settings), settings)
