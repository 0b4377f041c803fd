"""The orders service's SQL, nothing else. Batches go through `unnest` arrays: one round trip per table."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple, TypedDict

import asyncpg
from spm_common import outbox
from spm_common.db import Connection
from spm_common.envelope import CloudEvent

FANOUT_CHANNEL = "spm_orders_fanout"

# --- catalogue ---------------------------------------------------------------------------------------------


async def products(conn: Connection, skus: Sequence[str]) -> dict[str, asyncpg.Record]:
    rows = await conn.fetch(
        "SELECT sku, name_en, name_vi, download_url, major_version FROM products WHERE sku = ANY($1::text[])",
        list(skus),
    )
    return {row["sku"]: row for row in rows}


async def all_products(conn: Connection) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT sku, name_en, name_vi, download_url, major_version FROM products ORDER BY sku")


async def upsert_product(
    conn: Connection, sku: str, name_en: str, name_vi: str, download_url: str, major_version: int
) -> None:
    await conn.execute(
        "INSERT INTO products (sku, name_en, name_vi, download_url, major_version) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (sku) DO UPDATE SET name_en = EXCLUDED.name_en, name_vi = EXCLUDED.name_vi,"
        " download_url = EXCLUDED.download_url, major_version = EXCLUDED.major_version, updated_at = now()",
        sku,
        name_en,
        name_vi,
        download_url,
        major_version,
    )


# --- orders ------------------------------------------------------------------------------------------------


async def existing_orders(conn: Connection, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], uuid.UUID]:
    rows = await conn.fetch(
        "SELECT o.source, o.order_id, o.id FROM orders o"
        " JOIN unnest($1::text[], $2::text[]) AS k(source, order_id)"
        " ON o.source = k.source AND o.order_id = k.order_id",
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    return {(row["source"], row["order_id"]): row["id"] for row in rows}


class OrderRow(NamedTuple):
    """An order as `record_orders` writes it, with its purchaser's details."""

    id: uuid.UUID
    source: str
    order_id: str
    placed_at: datetime
    currency: str
    total: Decimal
    marketing_consent: bool
    policy_version: int
    via: str
    event_id: str | None
    card_data_removed: bool
    email: str
    name: str
    phone: str | None
    address: str | None  # JSON
    locale: str


class ItemRow(NamedTuple):
    order_id: uuid.UUID
    line: int
    sku: str
    product_name: str
    quantity: int
    unit_price: Decimal


class KeyRow(NamedTuple):
    license_key: str
    sku: str
    major_version: int
    order_id: uuid.UUID


# The events an order causes, each keyed by its order: written only if the order is (`record_orders`).
_ORDER_EVENTS = outbox.InStatement(first=27, key="uuid", kept="SELECT id FROM recorded")

# One statement writes a whole batch of orders: purchasers, orders, items, keys, purchases, consents and the
# events they cause. Inputs are arrays with one element per order, item line, key or event; each part keeps
# only what belongs to an order this statement inserted, so an order recorded before (or a moment ago by a
# replica) changes nothing, not even its purchaser. Foreign keys are checked at the end of the statement,
# when every part is written.
_RECORD_ORDERS = f"""
WITH incoming AS (
  SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::numeric[],
    $7::boolean[], $8::integer[], $9::text[], $10::text[], $11::boolean[],
    $12::text[], $13::text[], $14::text[], $15::jsonb[], $16::text[])
    WITH ORDINALITY AS n(id, source, order_id, placed_at, currency, total, marketing_consent, policy_version,
      via, event_id, card_data_removed, email, name, phone, address, locale, position)
  WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.source = n.source AND o.order_id = n.order_id)
), purchaser AS (
  -- A purchaser's details are the newest order's: one row per address (an upsert may not touch a row twice).
  INSERT INTO purchasers AS p (email, name, phone, address, locale, last_order_at)
  SELECT DISTINCT ON (email) email, name, phone, address, locale, placed_at FROM incoming
  ORDER BY email, placed_at DESC, position DESC
  ON CONFLICT (email) DO UPDATE SET
    name = CASE WHEN EXCLUDED.last_order_at >= p.last_order_at THEN EXCLUDED.name ELSE p.name END,
    phone = CASE WHEN EXCLUDED.last_order_at >= p.last_order_at THEN coalesce(EXCLUDED.phone, p.phone)
      ELSE p.phone END,
    address = CASE WHEN EXCLUDED.last_order_at >= p.last_order_at THEN coalesce(EXCLUDED.address, p.address)
      ELSE p.address END,
    locale = CASE WHEN EXCLUDED.last_order_at >= p.last_order_at THEN EXCLUDED.locale ELSE p.locale END,
    last_order_at = greatest(p.last_order_at, EXCLUDED.last_order_at),
    updated_at = now()
  RETURNING id, email, news_unsubscribed_at
), recorded AS (
  INSERT INTO orders (id, source, order_id, purchaser_id, placed_at, currency, total, locale, marketing_consent,
    privacy_policy_version, via, event_id, card_data_removed)
  SELECT n.id, n.source, n.order_id, p.id, n.placed_at, n.currency, n.total, n.locale, n.marketing_consent,
    n.policy_version, n.via, n.event_id, n.card_data_removed
  FROM incoming n JOIN purchaser p ON p.email = n.email
  ON CONFLICT (source, order_id) DO NOTHING
  RETURNING id, purchaser_id, placed_at, marketing_consent, privacy_policy_version
), line AS (
  SELECT * FROM unnest($17::uuid[], $18::integer[], $19::text[], $20::text[], $21::integer[], $22::numeric[])
    AS i(order_id, line, sku, product_name, quantity, unit_price)
  WHERE i.order_id IN (SELECT id FROM recorded)
), item AS (
  INSERT INTO order_items (order_id, line, sku, product_name, quantity, unit_price) SELECT * FROM line
), purchase AS (
  INSERT INTO purchases AS b (sku, purchaser_id, last_placed_at)
  SELECT i.sku, r.purchaser_id, max(r.placed_at) FROM line i JOIN recorded r ON r.id = i.order_id GROUP BY 1, 2
  ON CONFLICT (sku, purchaser_id) DO UPDATE SET last_placed_at = greatest(b.last_placed_at, EXCLUDED.last_placed_at)
), license_key AS (
  INSERT INTO license_keys (license_key, purchaser_id, sku, major_version, order_id)
  SELECT k.license_key, r.purchaser_id, k.sku, k.major_version, r.id
  FROM unnest($23::text[], $24::text[], $25::integer[], $26::uuid[]) AS k(license_key, sku, major_version, order_id)
  JOIN recorded r ON r.id = k.order_id
), consent AS (
  -- An order placed before its purchaser unsubscribed (arriving late) does not bring consent back.
  INSERT INTO consents (purchaser_id, order_id, policy_version, given_at)
  SELECT r.purchaser_id, r.id, r.privacy_policy_version, r.placed_at
  FROM recorded r JOIN purchaser p ON p.id = r.purchaser_id
  WHERE r.marketing_consent AND (p.news_unsubscribed_at IS NULL OR r.placed_at > p.news_unsubscribed_at)
), event AS (
  {_ORDER_EVENTS.insert}
)
SELECT array(SELECT id FROM recorded) AS recorded, {_ORDER_EVENTS.notify}
"""


async def record_orders(
    conn: Connection,
    orders: Sequence[OrderRow],
    items: Sequence[ItemRow],
    keys: Sequence[KeyRow],
    events: Sequence[outbox.Keyed[uuid.UUID]],
) -> set[uuid.UUID]:
    """Write a batch of orders and everything they cause in one round trip; returns the ids of the orders
    recorded (an order whose source and order id are known already is skipped, with all that is its). Items,
    keys and events name their order by its id."""
    recorded = await conn.fetchval(
        _RECORD_ORDERS,
        *_columns(orders, len(OrderRow._fields)),
        *_columns(items, len(ItemRow._fields)),
        *_columns(keys, len(KeyRow._fields)),
        *_ORDER_EVENTS.keyed_args(events),
    )
    return set(recorded)


async def orders_of(conn: Connection, email: str, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT o.id FROM orders o JOIN purchasers p ON p.id = o.purchaser_id WHERE p.email = $1"
        " ORDER BY o.placed_at DESC LIMIT $2",
        email,
        limit,
    )


async def orders_by_shop_id(conn: Connection, shop_order_id: str, limit: int) -> list[asyncpg.Record]:
    """The orders with that id at the shop (one per source)."""
    return await conn.fetch(
        "SELECT id FROM orders WHERE order_id = $1 ORDER BY placed_at DESC LIMIT $2", shop_order_id, limit
    )


async def license_keys_of(conn: Connection, order_id: uuid.UUID) -> list[asyncpg.Record] | None:
    """The order's keys in full, or None where there is no such order."""
    if not await conn.fetchval("SELECT true FROM orders WHERE id = $1", order_id):
        return None
    return await conn.fetch(
        "SELECT sku, major_version, license_key FROM license_keys WHERE order_id = $1 ORDER BY id", order_id
    )


class OrderDetail(TypedDict):
    order: asyncpg.Record  # with the purchaser's email, name, phone and address
    items: list[asyncpg.Record]
    keys: list[asyncpg.Record]


async def order_detail(conn: Connection, order_id: uuid.UUID) -> OrderDetail | None:
    return (await order_details(conn, [order_id])).get(order_id)


async def order_details(conn: Connection, order_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, OrderDetail]:
    """Each order with its purchaser, items and keys, by id (those that exist), in three statements whatever
    their number: the look-up of a purchaser's orders had made three per order, ~40 ms each while the keys
    were found by scanning them all (bench.console)."""
    ids = list(order_ids)
    orders = await conn.fetch(
        "SELECT o.id, o.source, o.order_id, o.placed_at, o.currency, o.total, o.locale, o.marketing_consent,"
        " o.privacy_policy_version, o.via, o.card_data_removed, o.recorded_at,"
        " p.email, p.name, p.phone, p.address"
        " FROM orders o JOIN purchasers p ON p.id = o.purchaser_id WHERE o.id = ANY($1::uuid[])",
        ids,
    )
    if not orders:
        return {}
    found = [row["id"] for row in orders]
    items = await conn.fetch(
        "SELECT order_id, line, sku, product_name, quantity, unit_price FROM order_items"
        " WHERE order_id = ANY($1::uuid[]) ORDER BY order_id, line",
        found,
    )
    keys = await conn.fetch(
        "SELECT order_id, sku, major_version, license_key FROM license_keys WHERE order_id = ANY($1::uuid[])"
        " ORDER BY order_id, id",
        found,
    )
    details: dict[uuid.UUID, OrderDetail] = {row["id"]: {"order": row, "items": [], "keys": []} for row in orders}
    for item in items:
        details[item["order_id"]]["items"].append(item)
    for key in keys:
        details[key["order_id"]]["keys"].append(key)
    return details


# --- purchasers --------------------------------------------------------------------------------------------


async def purchaser_keys(conn: Connection, email: str) -> list[asyncpg.Record]:
    """Every key the address owns with its product; empty when the address bought nothing."""
    return await conn.fetch(
        "SELECT p.name, p.locale, k.sku, k.license_key, pr.name_en, pr.name_vi, pr.download_url"
        " FROM purchasers p JOIN license_keys k ON k.purchaser_id = p.id LEFT JOIN products pr ON pr.sku = k.sku"
        " WHERE p.email = $1 ORDER BY k.sku, k.id",
        email,
    )


async def touch_purchaser(conn: Connection, email: str) -> None:
    """The purchaser used what is kept about them (recovered their keys): active now, so the purchaser
    retention (orders.retention) counts its years from today."""
    await conn.execute("UPDATE purchasers SET updated_at = now() WHERE email = $1", email)


async def purchaser_summary(conn: Connection, email: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT p.id, p.name, p.locale, p.created_at, p.last_order_at, p.upgrades_unsubscribed_at,"
        " p.news_unsubscribed_at,"
        " (SELECT count(*) FROM orders o WHERE o.purchaser_id = p.id) AS orders,"
        " (SELECT count(*) FROM license_keys k WHERE k.purchaser_id = p.id) AS license_keys,"
        " EXISTS (SELECT 1 FROM consents c WHERE c.purchaser_id = p.id AND c.withdrawn_at IS NULL) AS news_consent"
        " FROM purchasers p WHERE p.email = $1",
        email,
    )


async def unsubscribe_upgrades(conn: Connection, email: str) -> None:
    await conn.execute(
        "UPDATE purchasers SET upgrades_unsubscribed_at = now(), updated_at = now()"
        " WHERE email = $1 AND upgrades_unsubscribed_at IS NULL",
        email,
    )


async def withdraw_news_consent(conn: Connection, email: str) -> None:
    await conn.execute(
        "WITH p AS (UPDATE purchasers SET news_unsubscribed_at = now(), updated_at = now() WHERE email = $1"
        " RETURNING id)"
        " UPDATE consents SET withdrawn_at = now() WHERE purchaser_id IN (SELECT id FROM p) AND withdrawn_at IS NULL",
        email,
    )


# --- the operators' purchaser page ------------------------------------------------------------------------


@dataclass(frozen=True)
class PurchaserState:
    """What the operators' purchaser page shows of the purchaser row itself."""

    id: int
    email: str
    name: str
    locale: str
    created_at: datetime
    last_order_at: datetime
    upgrades_unsubscribed_at: datetime | None
    news_unsubscribed_at: datetime | None
    orders: int
    license_keys: int


@dataclass(frozen=True)
class ConsentRow:
    order_id: str  # the order's id at the shop
    policy_version: int
    given_at: datetime
    withdrawn_at: datetime | None


@dataclass(frozen=True)
class KeyResendRow:
    request_id: uuid.UUID
    purchaser_id: int
    operator: str
    license_keys: int
    requested_at: datetime


async def purchaser_state(conn: Connection, email: str) -> PurchaserState | None:
    row = await conn.fetchrow(
        "SELECT p.id, p.email, p.name, p.locale, p.created_at, p.last_order_at, p.upgrades_unsubscribed_at,"
        " p.news_unsubscribed_at,"
        " (SELECT count(*) FROM orders o WHERE o.purchaser_id = p.id) AS orders,"
        " (SELECT count(*) FROM license_keys k WHERE k.purchaser_id = p.id) AS license_keys"
        " FROM purchasers p WHERE p.email = $1",
        email,
    )
    return PurchaserState(**dict(row)) if row is not None else None


async def consents_of(conn: Connection, purchaser_id: int) -> list[ConsentRow]:
    """The purchaser's consents to news (one at most per order), the newest given first."""
    rows = await conn.fetch(
        "SELECT o.order_id, c.policy_version, c.given_at, c.withdrawn_at FROM consents c"
        " JOIN orders o ON o.id = c.order_id WHERE c.purchaser_id = $1 ORDER BY c.given_at DESC, c.id DESC",
        purchaser_id,
    )
    return [ConsentRow(**dict(row)) for row in rows]


_KEY_RESEND = "request_id, purchaser_id, operator, license_keys, requested_at"


async def key_resends_of(conn: Connection, purchaser_id: int, limit: int) -> list[KeyResendRow]:
    rows = await conn.fetch(
        f"SELECT {_KEY_RESEND} FROM key_resends WHERE purchaser_id = $1 ORDER BY requested_at DESC, id DESC LIMIT $2",
        purchaser_id,
        limit,
    )
    return [KeyResendRow(**dict(row)) for row in rows]


async def record_key_resend(
    conn: Connection, request_id: uuid.UUID, purchaser_id: int, operator: str, license_keys: int, event_id: str
) -> KeyResendRow | None:
    """None when this request id was recorded before (a form sent twice): nothing is to be sent again."""
    row = await conn.fetchrow(
        "INSERT INTO key_resends (request_id, purchaser_id, operator, license_keys, event_id)"
        f" VALUES ($1, $2, $3, $4, $5) ON CONFLICT (request_id) DO NOTHING RETURNING {_KEY_RESEND}",
        request_id,
        purchaser_id,
        operator,
        license_keys,
        event_id,
    )
    return KeyResendRow(**dict(row)) if row is not None else None


async def key_resends_since(conn: Connection, purchaser_id: int, since: datetime) -> list[datetime]:
    """When each of the purchaser's key resends since `since` was asked for, oldest first."""
    rows = await conn.fetch(
        "SELECT requested_at FROM key_resends WHERE purchaser_id = $1 AND requested_at >= $2 ORDER BY requested_at",
        purchaser_id,
        since,
    )
    return [r["requested_at"] for r in rows]


async def key_resend(conn: Connection, request_id: uuid.UUID) -> KeyResendRow | None:
    row = await conn.fetchrow(f"SELECT {_KEY_RESEND} FROM key_resends WHERE request_id = $1", request_id)
    return KeyResendRow(**dict(row)) if row is not None else None


# --- fan-outs ----------------------------------------------------------------------------------------------


async def record_fanout(conn: Connection, kind: str, key: str, source: str, event_id: str, payload: str) -> bool:
    """False when this release or announcement was recorded before: a replay sends nothing."""
    inserted = await conn.fetchval(
        "INSERT INTO fanouts (kind, key, source, event_id, payload) VALUES ($1, $2, $3, $4, $5::jsonb)"
        " ON CONFLICT (kind, key) DO NOTHING RETURNING id",
        kind,
        key,
        source,
        event_id,
        payload,
    )
    if inserted is not None:
        await conn.execute("SELECT pg_notify($1, '')", FANOUT_CHANNEL)
    return inserted is not None


async def claim_fanout(conn: Connection) -> asyncpg.Record | None:
    """The oldest unfinished fan-out, locked for this transaction; replicas take the next one or wait."""
    return await conn.fetchrow(
        "SELECT id, kind, key, payload::text AS payload, cursor FROM fanouts"
        " WHERE finished_at IS NULL AND paused_at IS NULL ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
    )


_FANOUT_EVENTS = outbox.InStatement(first=4)
_ADVANCE_FANOUT = (
    "WITH advanced AS (UPDATE fanouts SET cursor = $2, notified = notified + $3, batches = batches + 1"
    " WHERE id = $1),"
    f" events AS ({_FANOUT_EVENTS.insert})"
    f" SELECT {_FANOUT_EVENTS.notify}"
)


async def advance_fanout(
    conn: Connection, fanout_id: int, cursor: int, notified: int, events: Sequence[CloudEvent]
) -> None:
    """Move the fan-out's cursor past a batch and put the batch's notification requests in the outbox, in one
    statement (a thousand requests were a thousand INSERTs)."""
    await conn.execute(_ADVANCE_FANOUT, fanout_id, cursor, notified, *_FANOUT_EVENTS.args(events))


async def finish_fanout(conn: Connection, fanout_id: int) -> None:
    await conn.execute("UPDATE fanouts SET finished_at = now() WHERE id = $1", fanout_id)


async def fanouts(conn: Connection, limit: int = 20) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, kind, key, cursor, notified, batches, created_at, finished_at FROM fanouts"
        " ORDER BY id DESC LIMIT $1",
        limit,
    )


FANOUT_COLUMNS = (
    "id, kind, key, cursor, notified, batches, created_at, finished_at, started_by, total, paused_at,"
    " cancelled_at, payload::text AS payload"
)


async def start_fanout(
    conn: Connection, kind: str, key: str, source: str, event_id: str, payload: str, operator: str, total: int
) -> int | None:
    """An operator's fan-out; None when this release or announcement was recorded before."""
    fanout_id: int | None = await conn.fetchval(
        "INSERT INTO fanouts (kind, key, source, event_id, payload, started_by, total)"
        " VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7) ON CONFLICT (kind, key) DO NOTHING RETURNING id",
        kind,
        key,
        source,
        event_id,
        payload,
        operator,
        total,
    )
    if fanout_id is not None:
        await conn.execute("SELECT pg_notify($1, '')", FANOUT_CHANNEL)
    return fanout_id


async def fanout(conn: Connection, fanout_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {FANOUT_COLUMNS} FROM fanouts WHERE id = $1", fanout_id)


async def operator_fanouts(conn: Connection, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(f"SELECT {FANOUT_COLUMNS} FROM fanouts ORDER BY id DESC LIMIT $1", limit)


async def control_fanout(conn: Connection, fanout_id: int, action: str) -> asyncpg.Record | None:
    """Pause, resume or cancel an unfinished fan-out (the batch in hand, if any, completes first: this
    waits for its row lock); None when there is no such unfinished fan-out."""
    change = {
        "pause": "paused_at = coalesce(paused_at, now())",
        "resume": "paused_at = NULL",
        "cancel": "cancelled_at = now(), finished_at = now()",
    }[action]
    row = await conn.fetchrow(
        f"UPDATE fanouts SET {change} WHERE id = $1 AND finished_at IS NULL RETURNING {FANOUT_COLUMNS}", fanout_id
    )
    if row is not None and action == "resume":
        await conn.execute("SELECT pg_notify($1, '')", FANOUT_CHANNEL)
    return row


async def count_upgrade_recipients(conn: Connection, sku: str, since: datetime | None) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM purchases b JOIN purchasers p ON p.id = b.purchaser_id"
        " WHERE b.sku = $1 AND ($2::timestamptz IS NULL OR b.last_placed_at >= $2::timestamptz)"
        " AND p.upgrades_unsubscribed_at IS NULL",
        sku,
        since,
    )
    return count


async def count_news_recipients(conn: Connection) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM purchasers p"
        " WHERE EXISTS (SELECT 1 FROM consents c WHERE c.purchaser_id = p.id AND c.withdrawn_at IS NULL)"
    )
    return count


async def upgrade_recipients(
    conn: Connection, sku: str, since: datetime | None, after: int, limit: int
) -> list[asyncpg.Record]:
    """The next purchasers of `sku` by id (keyset), with an order since `since`, not unsubscribed."""
    return await conn.fetch(
        "SELECT p.id, p.email, p.name, p.locale FROM purchases b JOIN purchasers p ON p.id = b.purchaser_id"
        " WHERE b.sku = $1 AND b.purchaser_id > $3"
        " AND ($2::timestamptz IS NULL OR b.last_placed_at >= $2::timestamptz)"
        " AND p.upgrades_unsubscribed_at IS NULL"
        " ORDER BY b.purchaser_id LIMIT $4",
        sku,
        since,
        after,
        limit,
    )


async def news_recipients(conn: Connection, after: int, limit: int) -> list[asyncpg.Record]:
    """The next purchasers by id (keyset) whose consent to news is in force."""
    return await conn.fetch(
        "SELECT p.id, p.email, p.name, p.locale FROM purchasers p WHERE p.id > $1"
        " AND EXISTS (SELECT 1 FROM consents c WHERE c.purchaser_id = p.id AND c.withdrawn_at IS NULL)"
        " ORDER BY p.id LIMIT $2",
        after,
        limit,
    )


async def issue_release_keys(
    conn: Connection, release_id: str, sku: str, major_version: int, keys: dict[int, str]
) -> dict[int, str]:
    """One key per purchaser per release: a purchaser who already has one keeps it (the no-op update
    returns the stored key)."""
    records = await conn.fetch(
        "INSERT INTO license_keys (license_key, purchaser_id, sku, major_version, release_id)"
        " SELECT k, p, $3, $4, $5 FROM unnest($1::text[], $2::bigint[]) AS t(k, p)"
        " ON CONFLICT (release_id, purchaser_id) DO UPDATE SET release_id = EXCLUDED.release_id"
        " RETURNING purchaser_id, license_key",
        list(keys.values()),
        list(keys),
        sku,
        major_version,
        release_id,
    )
    return {record["purchaser_id"]: record["license_key"] for record in records}


# --- rate limits -------------------------------------------------------------------------------------------


def _columns(rows: Sequence[Sequence[object]], width: int) -> list[list[object]]:
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]
