"""Privacy requests (CONTRACT section 6), as every service answers them: the four real services, the real
Postgres and RabbitMQ. A person's data is made through the normal paths (a contact message and a reply, two
orders, the e-mails they cause, the audit entries of all of it), next to another person's; then a confirmed
access request and a confirmed erasure request for the first address are published as contact publishes them.
After the erasure every schema, every queue of the world and every log line the services wrote are scanned.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import aio_pika
import asyncpg
import orjson
from audit.app import create as create_audit
from audit.settings import Settings as AuditSettings
from contact.app import create as create_contact
from contact.settings import Settings as ContactSettings
from notifier.app import create as create_notifier
from notifier.settings import Settings as NotifierSettings
from orders.app import create as create_orders
from orders.settings import Settings as OrdersSettings
from spm_common.envelope import amqp_message, new_event
from spm_common.privacy import (
    ANSWERING_SERVICES,
    PRIVACY_REQUEST_COMPLETED,
    PRIVACY_REQUEST_CONFIRMED,
    PrivacyRequestCompleted,
    PrivacyRequestConfirmed,
)
from spm_common.testing.logs import CapturedLogs, captured_json_logs
from spm_common.testing.queues import peek_queues
from spm_common.testing.smtp import SmtpServer
from spm_common.testing.world import AMQP_URL, OPERATOR_TOKEN, World, running
from spm_common.topology import Topology

T = TypeVar("T")
OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
SCHEMAS = ("contact", "orders", "notifier", "audit")
SHOP = "https://shop.example/orders"


def person(tag: str) -> dict[str, Any]:
    """Names, phones and streets unlike anyone else's in the session, so a scan for them means something."""
    unique = uuid.uuid4().hex[:8]
    return {
        "email": f"{tag}-{unique}@example.com",
        "name": f"Phạm Thị {tag.title()} {unique}",
        "phone": f"+84 9{int(unique, 16) % 10**8:08d}",
        "line1": f"{unique} Đường Thử",
    }


def order(who: dict[str, Any], consent: bool) -> dict[str, Any]:
    return {
        "order_id": f"FS-2026-{uuid.uuid4().hex[:10].upper()}",
        "placed_at": "2026-11-29T03:59:12Z",
        "currency": "USD",
        "total": "49.00",
        "purchaser": {
            "name": who["name"],
            # Another spelling of the same address: the answer must find it all the same.
            "email": who["email"].upper() if consent else who["email"],
            "phone": who["phone"],
            "address": {"line1": who["line1"], "city": "Hà Nội", "postal_code": "100000", "country": "VN"},
            "locale": "vi",
        },
        "items": [{"sku": "SPM-DICT-PRO", "product_name": "SPM Dictionary Pro", "quantity": 1, "unit_price": "49.00"}],
        "marketing_consent": consent,
    }


async def eventually(check: Callable[[], Awaitable[T | None]], what: str, timeout: float = 30) -> T:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.1)


class Answers:
    """privacy.request.completed as published on the exchange, collected by a queue of the test's own."""

    def __init__(self) -> None:
        self.received: list[PrivacyRequestCompleted] = []

    def of(self, request_id: uuid.UUID) -> list[PrivacyRequestCompleted]:
        return [a for a in self.received if a.request_id == request_id]

    async def all_four(self, request_id: uuid.UUID) -> dict[str, PrivacyRequestCompleted]:
        async def complete() -> dict[str, PrivacyRequestCompleted] | None:
            answers = {a.service: a for a in self.of(request_id)}
            return answers if len(answers) == len(ANSWERING_SERVICES) else None

        return await eventually(complete, f"an answer from every service to {request_id}")


@asynccontextmanager
async def exchange_of(world: World) -> AsyncIterator[tuple[aio_pika.abc.AbstractExchange, Answers]]:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(world.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key=PRIVACY_REQUEST_COMPLETED)
        answers = Answers()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                answers.received.append(PrivacyRequestCompleted.model_validate(orjson.loads(message.body)["data"]))

        await queue.consume(on_message)
        yield exchange, answers


async def confirm(exchange: aio_pika.abc.AbstractExchange, kind: str, email: str, request_id: uuid.UUID) -> str:
    """Publish a confirmed request as contact's outbox relay would; returns the event's id."""
    event = new_event(
        PRIVACY_REQUEST_CONFIRMED,
        "https://spmgroup.vn/contact",
        PrivacyRequestConfirmed(
            request_id=request_id, kind=kind, email=email, locale="en", confirmed_at=datetime.now(UTC)
        ),
        purpose="privacy-request",
    )
    await exchange.publish(amqp_message(event), routing_key=event.type)
    return event.id


async def holding(admin: asyncpg.Connection, schema: str, needle: str) -> list[str]:
    """Every `table.column` of `schema` with a text, JSON or bytea value that contains `needle`, in any case."""
    columns = await admin.fetch(
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = $1 AND data_type IN ('text', 'character varying', 'jsonb', 'json', 'bytea')",
        schema,
    )
    found = []
    for c in columns:
        column = f'"{schema}"."{c["table_name"]}"."{c["column_name"]}"'
        if c["data_type"] == "bytea":
            # Bytes as text with non-ASCII bytes escaped, compared with the needle escaped the same way.
            condition = (
                f"position(lower(encode(convert_to($1, 'UTF8'), 'escape')) in lower(encode({column}, 'escape'))) > 0"
            )
        else:
            condition = f"position(lower($1) in lower({column}::text)) > 0"
        table = f'"{schema}"."{c["table_name"]}"'
        if await admin.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table} WHERE {condition})", needle):
            found.append(f"{c['table_name']}.{c['column_name']}")
    return found


def traces(who: dict[str, Any], text: str) -> list[str]:
    """Which of the person's address, name, phone and street can be read in `text`, in any case."""
    text = text.lower()
    return [key for key in ("email", "name", "phone", "line1") if who[key].lower() in text]


def log_leaks(logs: CapturedLogs, who: dict[str, Any]) -> list[str]:
    """Each log line holding the person's data, told by its logger, event and the kind of data it held."""
    return [
        f"{line.get('event')!r} holds {found}"
        for line in logs.lines
        if (found := traces(who, orjson.dumps(line).decode()))
    ]


async def queue_leaks(world: World, who: dict[str, Any]) -> list[str]:
    """Each message waiting in a queue of the world (main, retry, dead letters) that holds the person's data."""
    queues = await peek_queues(world.exchange, SCHEMAS)
    assert len(queues) == 3 * len(SCHEMAS)
    return [f"{name}: {found}" for name, texts in queues.items() for text in texts if (found := traces(who, text))]


async def test_every_service_answers_access_then_erasure_of_one_address_only(world: World, smtp: SmtpServer) -> None:
    subject, other = person("subject"), person("other")
    async with AsyncExitStack() as stack:
        # Every line the four services write during the test, debug ones too, rendered as in production.
        logs = stack.enter_context(captured_json_logs("e2e", "debug"))
        contact = await stack.enter_async_context(running(create_contact(world.settings(ContactSettings))))
        await stack.enter_async_context(running(create_orders(world.settings(OrdersSettings))))
        await stack.enter_async_context(running(create_notifier(world.settings(NotifierSettings))))
        audit = await stack.enter_async_context(running(create_audit(world.settings(AuditSettings))))
        exchange, answers = await stack.enter_async_context(exchange_of(world))
        admin = await asyncpg.connect(world.database_url)
        stack.push_async_callback(admin.close)

        # Their data, made the usual ways: a message each (the subject's answered), orders, the e-mails.
        message_ids = {}
        for who in (subject, other):
            response = await contact.post(
                "/v1/messages",
                json={"name": who["name"], "email": who["email"], "subject": f"About {who['line1']}", "message": "Hi"},
            )
            assert response.status_code == 202, response.text
            message_ids[who["email"]] = response.json()["id"]
            for consent in (False, True):
                event = new_event("order.placed", SHOP, order(who, consent))
                await exchange.publish(amqp_message(event), routing_key=event.type)
        reply = await contact.post(
            f"/v1/messages/{message_ids[subject['email']]}/replies", json={"body": "Thanks, see you"}, headers=OPERATOR
        )
        assert reply.status_code in (200, 201, 202), reply.text
        for who, mails in ((subject, 4), (other, 3)):  # acknowledgement, two confirmations (and the reply)
            await smtp.wait_to(who["email"], count=mails, timeout=30)

        async def audited() -> bool:
            # The last e-mails' outcomes are in the trail, and every relay has published its events.
            pending = [
                await admin.fetchval(f"SELECT count(*) FROM {s}.outbox WHERE published_at IS NULL") for s in SCHEMAS
            ]
            sent = await admin.fetchval("SELECT count(*) FROM audit.entries WHERE event_type = 'notification.sent'")
            return sent >= 7 and not any(pending)

        await eventually(audited, "the e-mails' outcomes in the audit trail")

        # Access: each service exports what it keeps about the subject, and nothing about the other person.
        access = uuid.uuid4()
        await confirm(exchange, "access", subject["email"].title(), access)
        exported = await answers.all_four(access)
        assert all(a.kind == "access" and a.export is not None for a in exported.values())
        [message] = exported["contact"].export["messages"]
        assert message["name"] == subject["name"] and message["subject"] == f"About {subject['line1']}"
        assert [r["body"] for r in message["replies"]] == ["Thanks, see you"]
        purchases = exported["orders"].export
        assert purchases["purchaser"]["name"] == subject["name"]
        assert purchases["purchaser"]["phone"] == subject["phone"]
        assert purchases["purchaser"]["postal_address"]["line1"] == subject["line1"]
        assert len(purchases["orders"]) == 2 and all(len(o["license_keys"]) == 1 for o in purchases["orders"])
        assert len(purchases["news_consents"]) == 1
        mails = exported["notifier"].export["deliveries"]
        assert sorted(d["template"] for d in mails) == [
            "contact-ack",
            "contact-reply",
            "order-confirmation",
            "order-confirmation",
        ]
        trail = {e["type"] for e in exported["audit"].export["entries"]}
        assert {
            "contact.message.received",
            "order.placed",
            "notification.requested",
            PRIVACY_REQUEST_CONFIRMED,
        } <= trail
        everything = orjson.dumps([a.model_dump(mode="json") for a in exported.values()]).decode()
        for value in other.values():
            assert value not in everything

        # A mail server refusing the subject's address echoes it in its reply, as real ones do: the reply goes
        # into the notifier's log line and the failure's event, where redaction must take the address out.
        smtp.reply_for_rcpt = f"550 5.1.1 <{subject['email']}>: Recipient address rejected"
        try:
            response = await contact.post(
                "/v1/messages",
                json={"name": subject["name"], "email": subject["email"], "subject": "Again", "message": "Hi"},
            )
            assert response.status_code == 202, response.text

            async def refused() -> bool:
                return await admin.fetchval(
                    "SELECT count(*) FROM audit.entries WHERE event_type = 'notification.failed'"
                ) >= 1 and not any(
                    [
                        await admin.fetchval(f"SELECT count(*) FROM {s}.outbox WHERE published_at IS NULL")
                        for s in SCHEMAS
                    ]
                )

            await eventually(refused, "the refused e-mail's failure in the audit trail")
        finally:
            smtp.reply_for_rcpt = None

        # An order the shop sent broken (no items) ends in orders' dead letters, the subject's data in its body.
        broken = new_event("order.placed", SHOP, {**order(subject, False), "items": []})
        await exchange.publish(amqp_message(broken), routing_key=broken.type)
        dead = Topology(world.exchange, "orders").dead_letter_queue_name

        async def dead_lettered() -> bool:
            return bool((await peek_queues(world.exchange, ["orders"]))[dead])

        await eventually(dead_lettered, "the broken order in orders' dead letters")

        # Erasure: the subject's personal data leaves every schema; the other person's stays.
        erasure = uuid.uuid4()
        erasure_event = await confirm(exchange, "erasure", subject["email"], erasure)
        erased = await answers.all_four(erasure)
        assert all(a.kind == "erasure" and a.export is None for a in erased.values())
        assert erased["contact"].counts["messages"] == 2 and erased["contact"].counts["replies"] == 1
        assert erased["orders"].counts["orders"] == 2 and erased["orders"].counts["consents_withdrawn"] == 1
        assert "accounting law" in erased["orders"].summary
        assert erased["notifier"].counts["deliveries"] == 5
        assert erased["audit"].counts["entries"] > 0
        for schema in SCHEMAS:
            for value in (subject["email"], subject["name"], subject["phone"], subject["line1"]):
                assert await holding(admin, schema, value) == [], (schema, value)
        for schema, value in (("contact", other["email"]), ("orders", other["name"]), ("orders", other["line1"])):
            assert await holding(admin, schema, value), (schema, value)
        # Nor in any queue, dead letters included (the broken order went with the erasure, and the answer
        # counts it), nor in any log line: logs never hold anyone's personal data (they are redacted), before
        # the erasure as after it.
        assert erased["orders"].counts["dead_letters"] == 1
        assert await queue_leaks(world, subject) == []
        assert await queue_leaks(world, other) == []
        assert len(logs.lines) > 50, "the services' log lines were not captured"
        assert log_leaks(logs, subject) == []
        assert log_leaks(logs, other) == []
        # The orders stay, anonymised, as accounting law requires; the keys with them.
        kept = await admin.fetchrow(
            "SELECT count(*) AS orders, count(k.id) AS keys, bool_and(p.erased_at IS NOT NULL) AS anonymised"
            " FROM orders.orders o JOIN orders.purchasers p ON p.id = o.purchaser_id"
            " LEFT JOIN orders.license_keys k ON k.order_id = o.id"
            " WHERE o.order_id = ANY($1::text[])",
            [o["order_id"] for o in purchases["orders"]],
        )
        assert dict(kept) == {"orders": 2, "keys": 2, "anonymised": True}

        # Audit: the chain verifies, and the subject's entries no longer answer to their address; the other's do.
        verified = await audit.get("/v1/audit/verify", params={"full": "true"}, headers=OPERATOR)
        assert verified.json()["ok"] is True, verified.text
        found = await audit.get("/v1/audit/events", params={"email": subject["email"]}, headers=OPERATOR)
        assert found.json()["items"] == []
        found = await audit.get("/v1/audit/events", params={"email": other["email"]}, headers=OPERATOR)
        assert found.json()["items"]
        entry = await admin.fetchval(
            "SELECT payload FROM audit.entries WHERE event_type = $1 AND payload LIKE '%' || $2 || '%'",
            PRIVACY_REQUEST_COMPLETED,
            str(erasure),
        )
        assert entry is not None and "export" not in orjson.loads(entry)

        # The same request delivered again, as a new event: no second answer, no failure.
        again = await confirm(exchange, "erasure", subject["email"], erasure)

        async def seen_everywhere() -> bool:
            seen = [await admin.fetchval(f"SELECT count(*) FROM {s}.inbox WHERE event_id = $1", again) for s in SCHEMAS]
            return all(seen)

        await eventually(seen_everywhere, "the repeated request in every inbox")
        await asyncio.sleep(1.0)
        assert len(answers.of(erasure)) == len(ANSWERING_SERVICES)
        assert erasure_event != again
        for schema in SCHEMAS:
            assert await admin.fetchval(f"SELECT count(*) FROM {schema}.privacy_answered") >= 2
