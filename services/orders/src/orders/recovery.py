"""Lost keys and downloads: every key and download link an address owns, e-mailed to that address only.

The answer never tells whether the address is known: the same code runs either way (rate limits, look-up,
and the request for the e-mail only where there is something to send), and the answer is held back to a
fixed floor so its timing says nothing either. Limits count per client (`spm_common.clientaddr`: the address
behind the trusted proxies, an IPv6 client's /64) and per address, keyed hashes of both, in fixed windows in
Postgres (`spm_common.ratelimit`, as every rate limit), so they hold across replicas and restarts. Over the
client's limit: 429. Over the address's limit: the same 202, and no e-mail (so nobody can flood an inbox, and
nothing is revealed).

An operator may send the same e-mail from the console (`resend`), for a purchaser who asked support: no
limit applies, the operator is recorded (`key_resends`), and the console's request id makes it happen once.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
from spm_common import outbox, ratelimit
from spm_common.db import Connection
from spm_common.envelope import CloudEvent, Purpose, new_event
from spm_common.notifications import NOTIFICATION_REQUESTED, NotificationRequested, Recipient

from orders import store
from orders.orders import product_name
from orders.settings import Settings

PURPOSE: Purpose = "license-recovery"
TEMPLATE = "license-recovery"


@dataclass(frozen=True)
class Limited:
    retry_after: int


def email_bucket(email: str, key: bytes) -> str:
    """The rate-limit bucket of a (normalised) address: a keyed hash, never the address."""
    return ratelimit.keyed("recovery-email", email, key)


async def recover(pool: asyncpg.Pool, settings: Settings, email: str, client: str) -> Limited | None:
    """`email` is normalised. Returns Limited when the client is over its limit, else None (accepted)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    key, window, now = settings.hash_key(), settings.orders_recovery_window_seconds, time.time()
    async with pool.acquire() as conn, conn.transaction():
        per_client = ratelimit.Limit(settings.orders_recovery_per_client, window)
        client_decision = await ratelimit.hit(conn, ratelimit.keyed("recovery-client", client, key), per_client, now)
        if client_decision.allowed:
            per_email = ratelimit.Limit(settings.orders_recovery_per_email, window)
            email_decision = await ratelimit.hit(conn, email_bucket(email, key), per_email, now)
            rows = await store.purchaser_keys(conn, email)
            if rows and email_decision.allowed:
                reference = f"license-recovery:{uuid.uuid4()}"
                await outbox.add(conn, _request(rows, email, settings.source, reference))
                await store.touch_purchaser(conn, email)
    await asyncio.sleep(max(0.0, settings.orders_recovery_min_seconds - (loop.time() - started)))
    return None if client_decision.allowed else Limited(client_decision.retry_after)


class NoSuchPurchaser(Exception):
    pass


class NoLicenseKeys(Exception):
    pass


class RequestIdTaken(Exception):
    """The request id was used before for another purchaser."""


@dataclass(frozen=True)
class Resent:
    resend: store.KeyResendRow
    duplicate: bool  # sent before under this request id: nothing was sent now


class TooManyResends(Exception):
    """The purchaser was sent their keys by operators as often as the window allows."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = retry_after


async def resend(
    conn: Connection, email: str, operator: str, request_id: uuid.UUID, source: str, limit: ratelimit.Limit
) -> Resent:
    """In the caller's transaction: the recovery e-mail with every key `email` (normalised) owns, asked for by
    `operator`, recorded with them and put in the outbox together. At most `limit.requests` resends reach one
    purchaser in `limit.window_seconds` (TooManyResends; the caller's transaction then rolls back)."""
    purchaser = await store.purchaser_state(conn, email)
    if purchaser is None:
        raise NoSuchPurchaser
    rows = await store.purchaser_keys(conn, email)
    if not rows:
        raise NoLicenseKeys
    event = _request(rows, email, source, f"license-resend:{request_id}")
    recorded = await store.record_key_resend(conn, request_id, purchaser.id, operator, len(rows), event.id)
    if recorded is None:
        before = await store.key_resend(conn, request_id)
        if before is None or before.purchaser_id != purchaser.id:
            raise RequestIdTaken
        return Resent(before, duplicate=True)
    # Counted from the resends themselves (this one included), not in `rate_windows`: the record is already
    # kept, goes with the purchaser in an erasure, and a form sent twice is one resend. An operator's session
    # or a support script cannot fill someone's mailbox with their keys.
    window = timedelta(seconds=limit.window_seconds)
    recent = await store.key_resends_since(conn, purchaser.id, recorded.requested_at - window)
    if len(recent) > limit.requests:
        ends = recent[-limit.requests - 1] + window
        raise TooManyResends(max(1, math.ceil((ends - recorded.requested_at).total_seconds())))
    await outbox.add(conn, event)
    await store.touch_purchaser(conn, email)  # the purchaser asked support: activity, as a recovery is
    return Resent(recorded, duplicate=False)


def _request(rows: list[asyncpg.Record], email: str, source: str, reference: str) -> CloudEvent:
    locale = rows[0]["locale"]
    products: dict[str, dict[str, object]] = {}
    for row in rows:
        entry = products.get(row["sku"])
        if entry is None:
            name = product_name(row, locale) if row["name_en"] else row["sku"]
            entry = {"product_name": name, "download_url": row["download_url"], "license_keys": []}
            products[row["sku"]] = entry
        keys = entry["license_keys"]
        assert isinstance(keys, list)
        keys.append(row["license_key"])
    return new_event(
        NOTIFICATION_REQUESTED,
        source,
        NotificationRequested(
            purpose=PURPOSE,
            template=TEMPLATE,
            locale=locale,
            recipient=Recipient(email=email, name=rows[0]["name"]),
            context={"products": list(products.values())},
            reference=reference,
        ),
        purpose=PURPOSE,
    )
