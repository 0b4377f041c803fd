"""No card data, ever: thousands of orders carrying test card numbers in every field and shape (runs of
separators, line breaks, thin spaces, full-width and other Unicode digits, card fields under any of their
names), at both entry points (RabbitMQ and the webhook) and straight into the domain function both share, and
contact messages with card numbers in their subject and body; then every text, JSON and byte column of every
schema of the database, every dead letter (body and headers) and every captured log line is scanned: no full
card number anywhere, read as a person would read it. Orders that stay valid once their card data is gone are
still fulfilled.

All four services run in this process in a world (database and exchange) of their own, so the scan covers
what each of them keeps of these orders and messages and nothing of other tests, and the notifier's pending
mail does not spill into the session's database.
"""

from __future__ import annotations

import itertools
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import card_shapes
import orjson
import pytest
from audit.app import create as create_audit
from audit.settings import Settings as AuditSettings
from contact.app import create as create_contact
from contact.settings import Settings as ContactSettings
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from notifier.app import create as create_notifier
from notifier.settings import Settings as NotifierSettings
from orders.orders import Incoming, config_of, place_orders
from orders_helpers import Orders, admin, dead_letters, eventually, fetch, order_data, started
from spm_common import cards
from spm_common.consumer import PermanentError
from spm_common.logging import configure_logging
from spm_common.testing.outside import SHOP, publish
from spm_common.testing.queues import message_text
from spm_common.testing.smtp import SmtpServer
from spm_common.testing.world import World, new_world, running

# Well-known test numbers of the card schemes, 13 to 19 digits; never a real card.
PANS = [
    "4111111111111111",
    "4242424242424242",
    "4012888888881881",
    "4000056655665556",
    "4222222222222",
    "5555555555554444",
    "5105105105105100",
    "2223003122003222",
    "378282246310005",
    "371449635398431",
    "6011111111111117",
    "6011000990139424",
    "3530111333300000",
    "30569309025904",
    "6304000000000000018",
]


def _more_test_numbers(count: int) -> list[str]:
    """Luhn-valid numbers of 13 to 19 digits in the schemes' test ranges, the same on every run."""
    rng = random.Random(16)
    found = []
    for i in range(count):
        prefix, length = rng.choice(card_shapes.PREFIXES), 13 + i % 7
        body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
        found.append(body + card_shapes.luhn_check_digit(body))
    return found


ALL_PANS = PANS + _more_test_numbers(35)
DIRECT, BROKER, WEBHOOK = 1700, 250, 120
CARD_FIELD_NAMES = [
    "card_number", "cardNumber", "Card Number", "pan", "PAN", "cvv", "cvc", "card_expiry", "creditCard",
    "cvv_code", "verification_value", "csc", "expiration_date", "Security Code", "valid_thru", "track2", "CID",
]  # fmt: skip
ADDRESSES = [f"card-test-{i}@example.com" for i in range(300)]
_serial = itertools.count()


def leaked(text: str) -> list[str]:
    """The test numbers that can still be read whole in `text`: digits in any script, with up to three
    separators of any kind between them, escaped or not (`4111\\n1111...` in a JSON line reads as a card)."""
    readings = {text, card_shapes.unescaped(text)}
    runs = [run for reading in readings for run in card_shapes.digit_runs(reading) if len(run) >= 13]
    return [pan for pan in ALL_PANS if any(pan in run for run in runs)] if runs else []


@st.composite
def card_values(draw: st.DrawFn) -> str | int:
    pan = draw(st.sampled_from(ALL_PANS))
    shape = draw(st.sampled_from(["plain", "spaces", "dashes", "amex", "mixed", "int", "named", "any"]))
    if shape == "int":
        return int(pan)
    if shape == "named":  # the shapes that had slipped through: separator runs, line breaks, thin spaces, full-width
        grouping, separator, form = card_shapes.NAMED_SHAPES[draw(st.sampled_from(sorted(card_shapes.NAMED_SHAPES)))]
        shaped = card_shapes.write(pan, grouping, separator, form)
    elif shape == "any":
        shaped = card_shapes.write(
            pan,
            draw(st.sampled_from(["fours", "amex", "digits"])),
            draw(
                st.lists(
                    st.lists(st.sampled_from(card_shapes.SEPARATORS), min_size=1, max_size=3).map("".join),
                    min_size=1,
                    max_size=4,
                )
            ),
            draw(st.lists(st.sampled_from(sorted(card_shapes.DIGIT_FORMS)), min_size=1, max_size=2)),
        )
    elif shape == "spaces":
        shaped = " ".join(pan[i : i + 4] for i in range(0, len(pan), 4))
    elif shape == "dashes":
        shaped = "-".join(pan[i : i + 4] for i in range(0, len(pan), 4))
    elif shape == "amex":
        shaped = f"{pan[:4]} {pan[4:10]} {pan[10:]}"
    elif shape == "mixed":
        shaped = "".join(ch + ("- "[i % 2] if i % 5 == 4 else "") for i, ch in enumerate(pan))
    elif shape == "plain":
        shaped = pan
    context = draw(
        st.sampled_from(["{}", "card {}", "{} exp 12/27 cvv 123", "x{}y", "ref:{};", "{}/{}", "Thẻ: {}", "{} {}"])
    )
    return context.replace("{}", shaped)


def _text(value: str | int) -> str:
    return str(value)


# Where a card number can hide in an order: (name, how to put it there).
PLACES: list[tuple[str, Callable[[dict[str, Any], str | int], None]]] = [
    ("name", lambda d, v: d["purchaser"].update(name=f"Nguyễn {_text(v)}")),
    ("email", lambda d, v: d["purchaser"].update(email=f"{_text(v).replace(' ', '')}@example.com")),
    ("phone", lambda d, v: d["purchaser"].update(phone=_text(v)[:40])),
    ("line1", lambda d, v: d["purchaser"]["address"].update(line1=f"12 {_text(v)}")),
    ("line2", lambda d, v: d["purchaser"]["address"].update(line2=_text(v))),
    ("city", lambda d, v: d["purchaser"]["address"].update(city=_text(v))),
    ("postal_code", lambda d, v: d["purchaser"]["address"].update(postal_code=_text(v)[:20])),
    ("order_id", lambda d, v: d.update(order_id=f"{d['order_id']}-{_text(v)}"[:100])),
    ("product_name", lambda d, v: d["items"][0].update(product_name=f"Dict {_text(v)}")),
    ("sku", lambda d, v: d["items"][0].update(sku=_text(v))),
    ("quantity", lambda d, v: d["items"][0].update(quantity=v)),
    ("total", lambda d, v: d.update(total=_text(v))),
    ("card field", lambda d, v: d.update({CARD_FIELD_NAMES[len(str(v)) % len(CARD_FIELD_NAMES)]: v})),
    ("payment", lambda d, v: d.update(payment={"method": "card", "card": {"number": v, "cvc": "123", "exp": "12/27"}})),
    ("unknown field", lambda d, v: d.update(note=v, metadata={"ref": v, "list": [v, "x"]})),
    ("key", lambda d, v: d.update(extra={_text(v): "value"})),
    ("item field", lambda d, v: d["items"][0].update(card_number=v, memo=_text(v))),
    ("purchaser field", lambda d, v: d["purchaser"].update(card=v, notes=[v])),
    ("list", lambda d, v: d.update(refs=[v, v])),
]


@st.composite
def orders_with_cards(draw: st.DrawFn) -> dict[str, Any]:
    data = order_data(draw(st.sampled_from(ADDRESSES)), consent=draw(st.booleans()))
    data["order_id"] = f"CARD-{next(_serial)}-{uuid.uuid4().hex[:6]}"
    for _ in range(draw(st.integers(1, 4))):
        _, put = draw(st.sampled_from(PLACES))
        put(data, draw(card_values()))
    return data


def generate(count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(orders_with_cards())
    def collect(data: dict[str, Any]) -> None:
        found.append(data)

    collect()
    return found


@st.composite
def envelopes(draw: st.DrawFn) -> dict[str, Any]:
    """Card numbers around the order too: in CloudEvent attributes, AMQP properties, or a body that is no
    event at all."""
    value = _text(draw(card_values()))
    # What goes in an AMQP short string (the message id, a header's name) is at most 255 bytes: no publisher
    # can send a longer one, and a card number in Unicode digits between runs of separators can be longer.
    short = draw(card_values().map(_text).filter(lambda text: len(f"evt-00000000-{text}".encode()) <= 255))
    return draw(
        st.sampled_from(
            [
                {},
                {"envelope": {"subject": f"order {value}"}},
                {"envelope": {"payref": value, "card_number": value}},
                {"source": f"{SHOP}/{value}"},
                {"event_id": f"evt-{uuid.uuid4().hex[:8]}-{short}"},
                {"headers": {"x-card": value}},
                # Headers nested at any depth, and one named by the number, on a body that is always dead-lettered.
                {
                    "body": f"not json {value}".encode(),
                    "headers": {"x-meta": {"ref": value, "refs": [value, {"deeper": value}]}, f"x-{short}": 1},
                },
                {"message_id": f"m-{short}"},
                {"body": f"not json at all {value}".encode()},
                {"body": orjson.dumps({"card_number": value, "note": value})},
            ]
        )
    )


def test_the_test_numbers_are_card_numbers() -> None:
    assert all(cards.luhn_valid([int(ch) for ch in pan]) and 13 <= len(pan) <= 19 for pan in ALL_PANS)
    assert {len(pan) for pan in ALL_PANS} == set(range(13, 20))


async def scan_database(world: World) -> list[str]:
    """Every text, JSON and byte column of every schema; returns where a card number was found."""
    found = []
    async with admin(world) as conn:
        columns = await conn.fetch(
            "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_schema NOT LIKE 'pg_%'"
            " AND data_type IN ('text', 'character varying', 'character', 'json', 'jsonb', 'bytea', 'ARRAY')"
        )
        assert {c["table_schema"] for c in columns} >= {"orders", "notifier", "audit", "contact"}
        for c in columns:
            name = f'"{c["table_schema"]}"."{c["table_name"]}"."{c["column_name"]}"'
            expression = f'"{c["column_name"]}"' + ("" if c["data_type"] == "bytea" else "::text")
            rows = await conn.fetch(f'SELECT {expression} AS v FROM "{c["table_schema"]}"."{c["table_name"]}"')
            for row in rows:
                value = row["v"]
                text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
                if leaked(text):
                    found.append(f"{name}: {leaked(text)}")
    return found


async def drain_dead_letters(exchange: str) -> list[str]:
    """Every message in every dead-letter queue of this exchange, as text (body, headers, properties)."""
    texts = []
    for service in ("orders", "notifier", "audit", "contact"):
        for message in await dead_letters(exchange, service):
            texts.append(message_text(message))
    return texts


@pytest.fixture(scope="module")
async def own_world(smtp: SmtpServer) -> AsyncIterator[World]:
    instance = new_world()
    instance.smtp_port = smtp.port
    await instance.create()
    yield instance
    await instance.destroy()


@pytest.mark.timeout(180)
async def test_no_card_number_is_kept_anywhere(own_world: World, capsys: pytest.CaptureFixture[str]) -> None:
    world = own_world
    started_at = time.monotonic()
    payloads = generate(DIRECT + BROKER + WEBHOOK)
    direct, via_broker, via_webhook = (
        payloads[:DIRECT],
        payloads[DIRECT : DIRECT + BROKER],
        payloads[DIRECT + BROKER :],
    )
    extras = generate_envelopes(BROKER)
    exchange = world.exchange
    configure_logging("orders", "json", "debug")  # every line, the debug ones too, into capsys
    try:
        async with AsyncExitStack() as stack:
            orders: Orders = await stack.enter_async_context(started(world, exchange=exchange))
            await stack.enter_async_context(
                running(create_notifier(world.settings(NotifierSettings, exchange=exchange)))
            )
            await stack.enter_async_context(running(create_audit(world.settings(AuditSettings, exchange=exchange))))
            contact = await stack.enter_async_context(
                running(create_contact(world.settings(ContactSettings, exchange=exchange, contact_rate_per_client=100)))
            )
            message_ids = [await post_message(contact, *texts) for texts in CONTACT_MESSAGES]

            [mark] = await fetch(world, "SELECT coalesce(max(id), 0) AS id FROM orders.outbox")
            first = mark["id"] + 1
            accepted, refused = await through_the_domain(orders, direct)
            for data, extra in zip(via_broker, extras, strict=True):
                await publish(exchange, "order.placed", data, **extra)
            statuses = [(await orders.webhook(data)).status_code for data in via_webhook]
            assert set(statuses) <= {200, 422}
            sentinel = order_data()
            await publish(exchange, "order.placed", sentinel)
            await eventually(
                lambda: fetch(world, "SELECT 1 FROM orders.orders WHERE order_id = $1", sentinel["order_id"]),
                timeout=60,
                what="every order consumed",
            )
            await eventually(
                lambda: everything_delivered(world, first), timeout=60, what="audit and notifier caught up"
            )
            await eventually(lambda: contact_delivered(world, message_ids), timeout=60, what="contact messages audited")
            dead = await drain_dead_letters(exchange)
    finally:
        logs = capsys.readouterr().out
        with capsys.disabled():
            configure_logging("tests", "console", "info")

    # Nothing kept anywhere.
    found = await scan_database(world)
    assert not found, sorted({f.split(":")[0] for f in found})
    assert [text[:300] for text in dead if leaked(text)] == []
    assert [line[:300] for line in logs.splitlines() if leaked(line)] == []
    assert logs.count("\n") > 100  # the logs were really captured

    # Orders that are valid without their card data were fulfilled, and reported.
    recorded = await fetch(
        world,
        "SELECT o.id, o.card_data_removed FROM orders.orders o WHERE o.order_id LIKE 'CARD-%'",
    )
    assert accepted + statuses.count(200) <= len(recorded) <= accepted + statuses.count(200) + BROKER
    assert len(recorded) > 0.5 * len(payloads), "too few valid orders: the test would prove little"
    assert refused > 0 and len(dead) > 0 and 422 in statuses
    with_cards = [r for r in recorded if r["card_data_removed"]]
    assert len(with_cards) > 0.5 * len(recorded)
    removed = await fetch(world, "SELECT body FROM orders.outbox WHERE event_type = 'security.card-data-removed'")
    assert len(removed) == len(with_cards)
    for row in removed:
        data = orjson.loads(row["body"])["data"]
        assert data["fields"] or data["masked_numbers"]
        assert not any(ch.isdigit() for field in data["fields"] for ch in field)
    confirmations = await fetch(
        world,
        "SELECT count(*) AS n FROM orders.outbox WHERE event_type = 'notification.requested'"
        " AND position('order-confirmation' IN convert_from(body, 'UTF8')) > 0",
    )
    assert confirmations[0]["n"] >= len(recorded)
    assert time.monotonic() - started_at < 120


# Contact messages with card numbers in the subject and the body, in the shapes visitors type them.
CONTACT_MESSAGES = [
    ("charge 4111 1111 1111 1111 please", "Hello,\ncharge 4111 1111 1111 1111 for the licence."),
    ("card ４２４２ ４２４２ ４２４２ ４２４２", "4242\n4242\n4242\n4242\nexp 12/27, cvv 123"),
    ("refund 5555 - 5555 - 5555 - 4444", "Amex 3782\u2009822463\u202f10005 or 6011-1111-1111-1117."),
]


async def post_message(contact: Any, subject: str, body: str) -> str:
    response = await contact.post(
        "/v1/messages",
        json={
            "name": "Nguyễn Thị Thẻ",
            "email": f"card-msg-{uuid.uuid4().hex[:8]}@example.com",
            "subject": subject,
            "message": body,
        },
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def contact_delivered(world: World, message_ids: list[str]) -> bool:
    """Every event the contact service enqueued for these messages is in the audit trail and every
    acknowledgement among them is recorded by the notifier."""
    [row] = await fetch(
        world,
        "SELECT count(*) FILTER (WHERE o.published_at IS NULL) AS pending,"
        " count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM audit.entries e WHERE e.event_id = o.event_id))"
        "  AS unaudited,"
        " count(*) FILTER (WHERE o.event_type = 'notification.requested' AND NOT EXISTS"
        "  (SELECT 1 FROM notifier.deliveries d WHERE d.request_event_id = o.event_id)) AS unrecorded,"
        " count(*) AS events"
        " FROM contact.outbox o WHERE EXISTS (SELECT 1 FROM unnest($1::text[]) AS m(id)"
        "  WHERE position(m.id IN convert_from(o.body, 'UTF8')) > 0)",
        message_ids,
    )
    return row["events"] >= 2 * len(message_ids) and row["pending"] == row["unaudited"] == row["unrecorded"] == 0


def generate_envelopes(count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(envelopes())
    def collect(extra: dict[str, Any]) -> None:
        found.append(extra)

    collect()
    while len(found) < count:
        found.append({})
    return found[:count]


async def through_the_domain(orders: Orders, payloads: list[dict[str, Any]]) -> tuple[int, int]:
    """The function both entry points call, in batches as the consumer does (one by one when a batch
    holds an order that can never be valid)."""
    pool, config = orders.app.state.runtime.pool, config_of(orders.settings)
    accepted = refused = 0

    async def place(batch: list[dict[str, Any]]) -> None:
        async with pool.acquire() as conn, conn.transaction():
            incoming = [Incoming(SHOP, data, "event", event_id=str(uuid.uuid4())) for data in batch]
            await place_orders(conn, incoming, config)

    for start in range(0, len(payloads), 50):
        batch = payloads[start : start + 50]
        try:
            await place(batch)
            accepted += len(batch)
        except PermanentError:
            for data in batch:
                try:
                    await place([data])
                    accepted += 1
                except PermanentError:
                    refused += 1
    return accepted, refused


async def everything_delivered(world: World, first: int) -> bool:
    """Every event the orders service enqueued since `first` is published, in the audit trail, and every
    notification request among them is recorded by the notifier."""
    [row] = await fetch(
        world,
        "SELECT count(*) FILTER (WHERE o.published_at IS NULL) AS pending,"
        " count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM audit.entries e WHERE e.event_id = o.event_id))"
        "  AS unaudited,"
        " count(*) FILTER (WHERE o.event_type = 'notification.requested' AND NOT EXISTS"
        "  (SELECT 1 FROM notifier.deliveries d WHERE d.request_event_id = o.event_id)) AS unrecorded"
        " FROM orders.outbox o WHERE o.id >= $1",
        first,
    )
    return row["pending"] == row["unaudited"] == row["unrecorded"] == 0
