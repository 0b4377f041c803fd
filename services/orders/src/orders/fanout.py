"""Free upgrades and news, sent to many purchasers without sending anything twice.

The consumer only records a release or an announcement (once per release_id / announcement_id, so a replay
sends nothing). A background worker then walks the eligible purchasers by id in batches: each batch is one
transaction that issues new keys where the release brings new registration information, enqueues one
notification request per purchaser and advances the fan-out's cursor. A crash rolls back the batch in hand
and the next worker resumes after the cursor: no purchaser skipped, none notified twice. Request ids are
derived from (release, purchaser), so even a batch replayed after an ambiguous commit has the same ids,
which the outbox and the notifier refuse twice.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import Final, TypeAlias, TypedDict

import asyncpg
import orjson
from spm_common import ratelimit
from spm_common.db import Connection
from spm_common.envelope import CloudEvent, Purpose, new_event
from spm_common.handlers import Meta
from spm_common.logging import get_logger
from spm_common.notifications import NOTIFICATION_REQUESTED, Locale, NotificationRequested, Recipient
from spm_common.pgnotify import Listener
from spm_common.redaction import describe_error
from spm_common.runtime import Runtime

from orders import licenses, store
from orders.events import ProductAnnounced, UpgradeReleased
from orders.orders import EVENT_NAMESPACE, product_name
from orders.settings import Settings

log = get_logger(__name__)
UPGRADE: Final = "upgrade"
NEWS: Final = "news"
HOUSEKEEPING_EVERY_SECONDS = 600.0


async def record_release(conn: Connection, release: UpgradeReleased, event: Meta) -> None:
    payload = orjson.dumps(release.model_dump(mode="json")).decode()
    await store.record_fanout(conn, UPGRADE, release.release_id, event.source, event.id, payload)


async def record_announcement(conn: Connection, news: ProductAnnounced, event: Meta) -> None:
    payload = orjson.dumps(news.model_dump(mode="json")).decode()
    await store.record_fanout(conn, NEWS, news.announcement_id, event.source, event.id, payload)


async def run_batch(conn: Connection, source: str, batch_size: int) -> bool:
    """One batch of the oldest unfinished fan-out, in the caller's transaction; False when none is due."""
    job = await store.claim_fanout(conn)
    if job is None:
        return False
    payload = orjson.loads(job["payload"])
    if job["kind"] == UPGRADE:
        release = UpgradeReleased.model_validate(payload)
        recipients = await store.upgrade_recipients(
            conn, release.sku, release.eligible_since, job["cursor"], batch_size
        )
        events = await _upgrade_notices(conn, release, recipients, source) if recipients else []
    else:
        news = ProductAnnounced.model_validate(payload)
        recipients = await store.news_recipients(conn, job["cursor"], batch_size)
        events = [_news(news, r, source) for r in recipients]
    if not recipients:
        await store.finish_fanout(conn, job["id"])
        log.info("fan-out finished", kind=job["kind"])
        return True
    await store.advance_fanout(conn, job["id"], recipients[-1]["id"], len(recipients), events)
    return True


async def _upgrade_notices(
    conn: Connection, release: UpgradeReleased, recipients: list[asyncpg.Record], source: str
) -> list[CloudEvent]:
    products = await store.products(conn, [release.sku])
    product = products.get(release.sku)
    keys: dict[int, str] = {}
    if release.new_registration:
        wanted = {r["id"]: licenses.new_key() for r in recipients}
        keys = await store.issue_release_keys(conn, release.release_id, release.sku, release.major, wanted)
    events = []
    for r in recipients:
        context = {
            "product_name": product_name(product, r["locale"]) if product else release.title,
            "title": release.title,
            "version": release.version,
            "notes_url": str(release.notes_url) if release.notes_url else None,
            "download_url": str(release.download_url),
            "license_key": keys.get(r["id"]),
        }
        events.append(_request("free-upgrade", "upgrade-notice", r, context, f"release:{release.release_id}", source))
    return events


async def test_notice(
    conn: Connection, kind: str, data: UpgradeReleased | ProductAnnounced, email: str, locale: Locale, source: str
) -> CloudEvent:
    """The e-mail a purchaser would get, addressed to an operator to check it before the real send. Its
    reference says it is a test, so it never counts as the fan-out's mail; no key is issued for it."""
    recipient: TestRecipient = {
        "id": uuid.uuid4().hex,
        "email": email,
        "name": email.split("@", 1)[0],
        "locale": locale,
    }
    if isinstance(data, UpgradeReleased):
        product = (await store.products(conn, [data.sku])).get(data.sku)
        context = {
            "product_name": product_name(product, locale) if product else data.title,
            "title": data.title,
            "version": data.version,
            "notes_url": str(data.notes_url) if data.notes_url else None,
            "download_url": str(data.download_url),
            "license_key": "TEST0-TEST0-TEST0-TEST0" if data.new_registration else None,
        }
        return _request("free-upgrade", "upgrade-notice", recipient, context, f"test:release:{data.release_id}", source)
    context = {"title": data.title, "summary": data.summary, "url": str(data.url)}
    return _request(
        "product-news", "product-news", recipient, context, f"test:announcement:{data.announcement_id}", source
    )


def _news(news: ProductAnnounced, r: RecipientRow, source: str) -> CloudEvent:
    context = {"title": news.title, "summary": news.summary, "url": str(news.url)}
    return _request("product-news", "product-news", r, context, f"announcement:{news.announcement_id}", source)


class TestRecipient(TypedDict):
    """The operator a test send goes to, in the shape of a purchaser's row."""

    id: str
    email: str
    name: str
    locale: Locale


# A purchaser as the store reads them (id, email, name, locale), or the operator a test send goes to.
RecipientRow: TypeAlias = asyncpg.Record | TestRecipient


def _request(
    purpose: Purpose, template: str, r: RecipientRow, context: Mapping[str, object], reference: str, source: str
) -> CloudEvent:
    return new_event(
        NOTIFICATION_REQUESTED,
        source,
        NotificationRequested(
            purpose=purpose,
            template=template,
            locale=r["locale"],
            recipient=Recipient(email=r["email"], name=r["name"]),
            context=dict(context),
            reference=reference,
        ),
        purpose=purpose,
        event_id=str(uuid.uuid5(EVENT_NAMESPACE, f"{template}\x00{reference}\x00{r['id']}")),
    )


async def worker(runtime: Runtime) -> None:
    """Background task: runs fan-out batches while there are any; wakes when one is recorded, or polls."""
    settings = runtime.settings
    assert isinstance(settings, Settings)
    listener = Listener(settings.role_database_url(), store.FANOUT_CHANNEL)
    health = runtime.health.loop("orders-fanout")
    loop = asyncio.get_running_loop()
    next_housekeeping = loop.time()
    try:
        while True:
            try:
                await listener.ensure()
                while await _one(runtime, settings):
                    pass
                if loop.time() >= next_housekeeping:
                    async with runtime.pool.acquire() as conn:
                        await ratelimit.sweep(conn)
                    next_housekeeping = loop.time() + HOUSEKEEPING_EVERY_SECONDS
                health.ok()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Postgres away, or a bad batch: the cursor did not move; try again later
                health.failed(describe_error(exc))
                await listener.close()
                await asyncio.sleep(1.0)
            await listener.wait(settings.orders_fanout_poll_seconds)
    finally:
        await listener.close()


async def _one(runtime: Runtime, settings: Settings) -> bool:
    async with runtime.pool.acquire() as conn, conn.transaction():
        return await run_batch(conn, settings.source, settings.orders_fanout_batch)
