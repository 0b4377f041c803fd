"""Recording orders: the one code path behind both the `order.placed` event and the signed webhook.

Card data is removed first, then the order is validated; a new order (source and order id not seen before)
updates its purchaser, keeps its items and totals, issues one license key per unit, records consent to
news, and asks the notifier for the confirmation e-mail, all in the caller's transaction. A batch of
orders costs a fixed number of statements, not a number per order.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg
from spm_common import cards, outbox
from spm_common.consumer import PermanentError
from spm_common.db import Connection
from spm_common.envelope import OutboxRow, Purpose, new_event_body
from spm_common.handlers import Meta
from spm_common.notifications import NOTIFICATION_REQUESTED, NotificationRequested, Recipient

from orders import licenses, store
from orders.events import (
    CARD_DATA_REMOVED,
    ORDER_RECORDED,
    CardDataRemoved,
    OrderItemRecorded,
    OrderPlaced,
    OrderRecorded,
    parse,
)
from orders.settings import Settings

PURPOSE: Purpose = "fulfil-order"
TEMPLATE = "order-confirmation"
# Ids of the events an order causes are derived from it, so the same order can never cause them twice.
EVENT_NAMESPACE = uuid.UUID("9b0b8a39-5c43-4c55-9a55-3f1f6b1e0a61")

Via = Literal["event", "webhook"]


@dataclass(frozen=True)
class Incoming:
    """One order as it arrived: its raw data (the webhook's) or its payload as the consumer validated it (an
    event's), who sent it, and what card data was already removed."""

    source: str
    data: Any  # the order as it came, JSON of any shape: `OrderPlaced` checks it, item by item
    via: Via
    event_id: str | None = None
    removed: cards.Findings | None = None
    order: OrderPlaced | None = None
    # The event's, carried into the events the order causes (a batch is handled outside any one event's
    # logging context); None: the request's (a webhook's X-Request-ID), as `new_event_body` finds it.
    correlation_id: str | None = None

    @classmethod
    def from_event(cls, order: OrderPlaced, meta: Meta) -> Incoming:
        findings = cards.marker_findings(meta.scrubbed)
        return cls(meta.source, None, "event", meta.id, findings, order, correlation_id=meta.correlationid)


@dataclass(frozen=True)
class Recorded:
    id: uuid.UUID
    duplicate: bool


@dataclass(frozen=True)
class Config:
    source: str  # of the events this service publishes
    policy_version: int


def config_of(settings: Settings) -> Config:
    return Config(settings.source, settings.orders_policy_version)


@dataclass
class _Order:
    incoming: Incoming
    source: str
    order: OrderPlaced
    removed: cards.Findings
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    keys: list[list[str]] = field(default_factory=list)  # per item line


def accept(incoming: Incoming) -> _Order:
    """Card data out, then validation (InvalidEvent: the order can never be valid)."""
    if incoming.order is not None:
        # An event: the consumer's scrubber (`Runtime(scrub=cards.scrub_body)`) took card data out of the whole
        # delivery, its source included, before the payload was validated; `removed` is what it found.
        return _Order(incoming, incoming.source, incoming.order, incoming.removed or cards.Findings())
    data, removed = cards.scrub(incoming.data)
    if incoming.removed:
        removed.merge(incoming.removed)
    source, masked = cards.mask_text(incoming.source)
    removed.masked += masked
    if not isinstance(data, dict):
        raise PermanentError("order data must be a JSON object")
    return _Order(incoming, source, parse(OrderPlaced, data), removed)


async def place_orders(conn: Connection, batch: Sequence[Incoming], config: Config) -> list[Recorded]:
    """Record a batch of orders in the caller's transaction; one result per incoming order, in order."""
    accepted = [accept(incoming) for incoming in batch]
    first: dict[tuple[str, str], _Order] = {}
    for candidate in accepted:
        first.setdefault((candidate.source, candidate.order.order_id), candidate)
    inserted = await _record(conn, list(first.values()), config)
    # Orders recorded before (or a moment ago by a replica): their results name the order that was kept.
    known = [key for key, o in first.items() if o.id not in inserted]
    existing = await store.existing_orders(conn, known) if known else {}
    results = []
    for candidate in accepted:
        key = (candidate.source, candidate.order.order_id)
        winner = first[key]
        if key in existing:
            results.append(Recorded(existing[key], duplicate=True))
        else:
            results.append(Recorded(winner.id, duplicate=candidate is not winner or winner.id not in inserted))
    return results


async def _record(conn: Connection, candidates: list[_Order], config: Config) -> set[uuid.UUID]:
    """One round trip for the catalogue, one for everything written; what an order causes is prepared for
    every candidate, and the statement keeps only what belongs to the orders it inserts."""
    skus = {item.sku for o in candidates for item in o.order.items}
    catalogue = await store.products(conn, sorted(skus))
    unknown = sorted(skus - catalogue.keys())
    if unknown:
        raise PermanentError(f"unknown product sku: {', '.join(unknown)[:200]}")

    orders: list[store.OrderRow] = []
    items: list[store.ItemRow] = []
    keys: list[store.KeyRow] = []
    events: list[outbox.Keyed[uuid.UUID]] = []
    for o in candidates:
        orders.append(_order_row(o, config))
        for line, item in enumerate(o.order.items, start=1):
            items.append(store.ItemRow(o.id, line, item.sku, item.product_name, item.quantity, item.unit_price))
            issued = licenses.new_keys(item.quantity)
            o.keys.append(issued)
            major = catalogue[item.sku]["major_version"]
            keys.extend(store.KeyRow(key, item.sku, major, o.id) for key in issued)
        events.extend(outbox.Keyed(o.id, e) for e in _events(o, catalogue, config))
    return await store.record_orders(conn, orders, items, keys, events)


def _policy(o: _Order, config: Config) -> int:
    return o.order.privacy_policy_version or config.policy_version


def _order_row(o: _Order, config: Config) -> store.OrderRow:
    order, p = o.order, o.order.purchaser
    return store.OrderRow(
        o.id,
        o.source,
        order.order_id,
        order.placed_at,
        order.currency,
        order.total,
        order.marketing_consent,
        _policy(o, config),
        o.incoming.via,
        o.incoming.event_id,
        bool(o.removed),
        p.email,
        p.name,
        p.phone,
        p.address.model_dump_json() if p.address else None,
        p.locale,
    )


def _events(o: _Order, catalogue: Mapping[str, asyncpg.Record], config: Config) -> list[OutboxRow]:
    """The events the order causes, as the outbox stores them. Their payloads are validated by their models; the
    envelope is written by `new_event_body` (what `new_event` would make, without building a CloudEvent)."""
    order, locale = o.order, o.order.purchaser.locale
    key = f"{o.source}\x00{order.order_id}"
    recorded = new_event_body(
        ORDER_RECORDED,
        config.source,
        OrderRecorded(
            id=str(o.id),
            source=o.source,
            order_id=order.order_id,
            via=o.incoming.via,
            placed_at=order.placed_at,
            currency=order.currency,
            total=order.total,
            items=[OrderItemRecorded(sku=i.sku, quantity=i.quantity, unit_price=i.unit_price) for i in order.items],
            email=order.purchaser.email,
            marketing_consent=order.marketing_consent,
            privacy_policy_version=_policy(o, config),
            license_keys_issued=sum(len(k) for k in o.keys),
            card_data_removed=bool(o.removed),
        ),
        purpose=PURPOSE,
        event_id=str(uuid.uuid5(EVENT_NAMESPACE, f"order.recorded\x00{key}")),
        correlation_id=o.incoming.correlation_id,
    )
    lines = [
        {
            "product_name": product_name(catalogue[item.sku], locale),
            "quantity": item.quantity,
            "download_url": catalogue[item.sku]["download_url"],
            "license_keys": keys,
        }
        for item, keys in zip(order.items, o.keys, strict=True)
    ]
    confirmation = new_event_body(
        NOTIFICATION_REQUESTED,
        config.source,
        NotificationRequested(
            purpose=PURPOSE,
            template=TEMPLATE,
            locale=locale,
            recipient=Recipient(email=order.purchaser.email, name=order.purchaser.name),
            context={"order_id": order.order_id, "currency": order.currency, "total": str(order.total), "items": lines},
            reference=f"order:{o.id}",
        ),
        purpose=PURPOSE,
        event_id=str(uuid.uuid5(EVENT_NAMESPACE, f"{TEMPLATE}\x00{key}")),
        correlation_id=o.incoming.correlation_id,
    )
    events = [recorded, confirmation]
    if o.removed:
        events.append(
            new_event_body(
                CARD_DATA_REMOVED,
                config.source,
                CardDataRemoved(
                    source=o.source,
                    via=o.incoming.via,
                    order=str(o.id),
                    fields=sorted(o.removed.fields),
                    masked_numbers=o.removed.masked,
                ),
                event_id=str(uuid.uuid5(EVENT_NAMESPACE, f"{CARD_DATA_REMOVED}\x00{key}")),
                correlation_id=o.incoming.correlation_id,
            )
        )
    return events


def product_name(product: asyncpg.Record, locale: str) -> str:
    return str(product["name_vi"] if locale == "vi" else product["name_en"])
