"""The orders service's answer to a confirmed privacy request (CONTRACT section 6).

Access exports what the service keeps about the address: the purchaser record (name, phone, postal address,
language, unsubscribes), every order with its items and license keys, keys issued with upgrades, consents
to news, the times an operator e-mailed the keys again, and the license-recovery requests of the current
rate-limit window.

Erasure anonymises rather than deletes: accounting law requires the orders (order id, date, items, amounts),
so they stay, attached to the purchaser row emptied of address, name, phone and postal address. Consent to
news is withdrawn, upgrade notices stop, the recovery counter and the published events that named the
address go, and so do the service's dead letters that name it (a broken order, say:
spm_common.privacy.DeadLetterEraser). License keys stay valid and attached to the anonymised orders: the
licences were paid for, and software already activated keeps working; but no one can recover them by e-mail
any more, since no address leads to them. Everything happens in the transaction that enqueues the answer, in a
few set-based statements.
"""

from __future__ import annotations

from typing import Any

import orjson
from spm_common import outbox, ratelimit
from spm_common.addresses import normalise_address
from spm_common.db import Connection
from spm_common.envelope import CloudEvent
from spm_common.handlers import Meta
from spm_common.logging import get_logger
from spm_common.privacy import (
    AnsweringService,
    DeadLetterEraser,
    PrivacyRequestConfirmed,
    completed,
    first_answer,
    forget_published,
)

from orders import recovery
from orders.events import normalise_email

log = get_logger(__name__)
SERVICE: AnsweringService = "orders"

# Everything about one purchaser as one JSON document, in one statement (items and keys grouped per order).
_EXPORT = """
WITH p AS (SELECT * FROM purchasers WHERE email = $1),
o AS (SELECT o.* FROM orders o JOIN p ON o.purchaser_id = p.id)
SELECT jsonb_build_object(
  'purchaser', (SELECT jsonb_build_object('email', email, 'name', name, 'phone', phone, 'postal_address', address,
    'language', locale, 'first_recorded_at', created_at, 'last_order_at', last_order_at,
    'upgrade_notices_unsubscribed_at', upgrades_unsubscribed_at, 'news_unsubscribed_at', news_unsubscribed_at)
    FROM p),
  'orders', coalesce((SELECT jsonb_agg(jsonb_build_object('order_id', o.order_id, 'shop', o.source,
    'placed_at', o.placed_at, 'currency', o.currency, 'total', o.total::text, 'language', o.locale,
    'marketing_consent', o.marketing_consent, 'privacy_policy_version', o.privacy_policy_version,
    'received_via', o.via, 'card_data_removed', o.card_data_removed, 'recorded_at', o.recorded_at,
    'items', coalesce(i.items, '[]'::jsonb), 'license_keys', coalesce(k.keys, '[]'::jsonb))
    ORDER BY o.placed_at, o.id)
    FROM o
    LEFT JOIN LATERAL (SELECT jsonb_agg(jsonb_build_object('sku', sku, 'product_name', product_name,
      'quantity', quantity, 'unit_price', unit_price::text) ORDER BY line) AS items
      FROM order_items WHERE order_id = o.id) i ON true
    LEFT JOIN LATERAL (SELECT jsonb_agg(jsonb_build_object('sku', sku, 'major_version', major_version,
      'license_key', license_key, 'issued_at', issued_at) ORDER BY id) AS keys
      FROM license_keys WHERE order_id = o.id) k ON true), '[]'::jsonb),
  'upgrade_license_keys', coalesce((SELECT jsonb_agg(jsonb_build_object('sku', k.sku, 'release_id', k.release_id,
    'major_version', k.major_version, 'license_key', k.license_key, 'issued_at', k.issued_at) ORDER BY k.id)
    FROM license_keys k JOIN p ON k.purchaser_id = p.id WHERE k.release_id IS NOT NULL), '[]'::jsonb),
  'news_consents', coalesce((SELECT jsonb_agg(jsonb_build_object('order_id', o.order_id,
    'privacy_policy_version', c.policy_version, 'given_at', c.given_at, 'withdrawn_at', c.withdrawn_at)
    ORDER BY c.given_at, c.id) FROM consents c JOIN o ON o.id = c.order_id), '[]'::jsonb),
  'license_key_resends', coalesce((SELECT jsonb_agg(jsonb_build_object('requested_at', r.requested_at,
    'license_keys', r.license_keys) ORDER BY r.id) FROM key_resends r JOIN p ON r.purchaser_id = p.id), '[]'::jsonb),
  'license_recovery', (SELECT jsonb_build_object('requests_this_window', hits, 'window_started_at', window_start)
    FROM rate_windows WHERE split_part(bucket, '/', 1) = $2 AND expires_at > now()
    ORDER BY window_start DESC LIMIT 1)
)::text
"""

# Anonymises the purchasers of the addresses $1: one request's address, or the purchasers retention lets go of
# (orders.retention). Their recovery counters go by `erase`, with them.
ERASE = """
WITH p AS (
  UPDATE purchasers SET email = NULL, name = NULL, phone = NULL, address = NULL, erased_at = now(),
    upgrades_unsubscribed_at = coalesce(upgrades_unsubscribed_at, now()),
    news_unsubscribed_at = coalesce(news_unsubscribed_at, now()), updated_at = now()
  WHERE email = ANY($1::text[]) RETURNING id),
withdrawn AS (UPDATE consents SET withdrawn_at = now()
  WHERE purchaser_id IN (SELECT id FROM p) AND withdrawn_at IS NULL RETURNING 1),
-- Only the upgrade fan-out reads `purchases`: an erased purchaser is no one to notify.
unlisted AS (DELETE FROM purchases WHERE purchaser_id IN (SELECT id FROM p) RETURNING 1)
SELECT (SELECT count(*) FROM p) AS purchasers,
  (SELECT count(*) FROM orders WHERE purchaser_id IN (SELECT id FROM p)) AS orders,
  (SELECT count(*) FROM license_keys WHERE purchaser_id IN (SELECT id FROM p)) AS license_keys,
  (SELECT count(*) FROM withdrawn) AS consents_withdrawn,
  (SELECT count(*) FROM unlisted) AS purchases
"""


async def erase(conn: Connection, addresses: list[str], counters: list[str]) -> dict[str, int]:
    """Anonymise the purchasers of `addresses` (ERASE) and forget their recovery counters; what was done, by
    kind of record."""
    row = await conn.fetchrow(ERASE, addresses)
    assert row is not None
    counts = {name: int(row[name]) for name in row.keys()}  # noqa: SIM118 (a Record's keys are its columns)
    return {**counts, "recovery_counters": await ratelimit.forget(conn, counters)}


KEPT = (
    "Kept, as accounting law requires: {orders} orders with their order id, date, items and amounts, in a record"
    " that no longer holds a name, e-mail address, phone or postal address. The {keys} license keys stay valid"
    " and attached to those orders (the software licences were paid for), but can no longer be recovered by"
    " e-mail. Consent to news is withdrawn and no upgrade notice will be sent."
)


async def on_confirmed(
    conn: Connection,
    request: PrivacyRequestConfirmed,
    meta: Meta,
    *,
    source: str,
    hash_key: bytes,
    dead_letters: DeadLetterEraser,
) -> None:
    """Handler of privacy.request.confirmed, in the consumer's transaction."""
    if not await first_answer(conn, request):
        log.info("privacy request answered before", request_id=str(request.request_id))
        return
    address = _address(request.email)
    counter = recovery.email_bucket(address, hash_key)
    if request.kind == "access":
        answer = await _access(conn, address, counter, request, source)
    else:
        answer = await _erase(conn, address, counter, request, source, dead_letters)
    await outbox.add(conn, answer)
    log.info("privacy request answered", request_id=str(request.request_id), kind=request.kind)


def _address(email: str) -> str:
    """The spelling purchasers are stored under (`normalise_email`), or, for an address it refuses (which
    no purchaser can then have), the plain lower-case form."""
    try:
        return normalise_email(email)
    except ValueError:
        return normalise_address(email)


async def _access(
    conn: Connection, address: str, counter: str, request: PrivacyRequestConfirmed, source: str
) -> CloudEvent:
    # The export as Postgres built it: JSON passed on as it is.
    export: dict[str, Any] = orjson.loads(await conn.fetchval(_EXPORT, address, counter))
    orders = export["orders"]
    counts = {
        "orders": len(orders),
        "items": sum(len(o["items"]) for o in orders),
        "license_keys": sum(len(o["license_keys"]) for o in orders) + len(export["upgrade_license_keys"]),
        "news_consents": len(export["news_consents"]),
    }
    if export["purchaser"] is None:
        summary = "No order from this address."
    else:
        summary = (
            f"{counts['orders']} orders with {counts['license_keys']} license keys, and the purchaser's name,"
            " e-mail address, phone, postal address and language, kept to fulfil the orders (keys, lost keys,"
            " free upgrades) and, with consent, to send news."
        )
    return completed(source, SERVICE, request, summary, counts, export)


async def _erase(
    conn: Connection,
    address: str,
    counter: str,
    request: PrivacyRequestConfirmed,
    source: str,
    dead_letters: DeadLetterEraser,
) -> CloudEvent:
    counts = await erase(conn, [address], [counter])
    events = await forget_published(conn, [address])
    # The spelling purchasers are kept under too (an internationalised domain may normalise otherwise).
    dead = await dead_letters.erase(conn, request, [address])
    if counts["purchasers"]:
        summary = "Erased the purchaser's name, e-mail address, phone and postal address. " + KEPT.format(
            orders=counts["orders"], keys=counts["license_keys"]
        )
    else:
        summary = "No order from this address: nothing to erase."
    return completed(source, SERVICE, request, summary, {**counts, "published_events": events, "dead_letters": dead})
