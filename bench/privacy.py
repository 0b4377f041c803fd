"""Privacy-request benchmark: how long each service takes to answer a confirmed access request, then an erasure
request, for one address with N orders and N contact messages (the issue asks for N = 1,000: access under
10 s, erasure under 30 s), among other people's data.

    uv run python -m bench.privacy [--quick] [--orders N] [--messages N] [--others N]

The four services run in this process against the local Postgres and RabbitMQ (their own database and
exchange, removed at the end) and an in-process SMTP server. The data is made through the normal paths:
`order.placed` events, `POST /v1/messages`, the e-mails both cause, and the audit entries of all of it. Each
figure is the time from publishing `privacy.request.confirmed` to that service's `privacy.request.completed`
arriving on the exchange (so it includes the broker both ways and the outbox relay), with the answer's size.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime

import aio_pika
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
from spm_common.privacy import ANSWERING_SERVICES, PRIVACY_REQUEST_COMPLETED, PRIVACY_REQUEST_CONFIRMED
from spm_common.testing.smtp import SmtpServer
from spm_common.testing.world import AMQP_URL, World, new_world, running

SCHEMAS = ("contact", "orders", "notifier", "audit")


def order(email: str, name: str) -> dict[str, object]:
    return {
        "order_id": f"FS-BENCH-{uuid.uuid4().hex[:12].upper()}",
        "placed_at": "2026-11-29T03:59:12Z",
        "currency": "USD",
        "total": "49.00",
        "purchaser": {
            "name": name,
            "email": email,
            "phone": "+84 912 345 678",
            "address": {"line1": "12 Tràng Tiền", "city": "Hà Nội", "postal_code": "100000", "country": "VN"},
            "locale": "vi",
        },
        "items": [{"sku": "SPM-DICT-PRO", "product_name": "SPM Dictionary Pro", "quantity": 1, "unit_price": "49.00"}],
        "marketing_consent": True,
    }


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.5)


async def run(world: World, smtp: SmtpServer, orders: int, messages: int, others: int) -> None:
    subject = f"subject-{uuid.uuid4().hex[:8]}@example.vn"
    async with AsyncExitStack() as stack:
        contact = await stack.enter_async_context(running(create_contact(world.settings(ContactSettings))))
        await stack.enter_async_context(running(create_orders(world.settings(OrdersSettings))))
        await stack.enter_async_context(running(create_notifier(world.settings(NotifierSettings))))
        await stack.enter_async_context(running(create_audit(world.settings(AuditSettings))))
        connection = await aio_pika.connect(AMQP_URL)
        await stack.enter_async_context(connection)
        channel = await connection.channel()
        exchange = await channel.declare_exchange(world.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key=PRIVACY_REQUEST_COMPLETED)
        arrived: dict[str, dict[str, tuple[float, int]]] = {}

        async def on_answer(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                data = orjson.loads(message.body)["data"]
                arrived.setdefault(data["request_id"], {})[data["service"]] = (time.monotonic(), len(message.body))

        await queue.consume(on_answer)
        admin = await world.admin()
        stack.push_async_callback(admin.close)

        started = time.monotonic()
        people = [(subject, "Nguyễn Văn Thử", orders)] + [
            (f"other-{i}-{uuid.uuid4().hex[:6]}@example.vn", f"Người Khác {i}", 1) for i in range(others)
        ]
        for email, name, count in people:
            for _ in range(count):
                event = new_event("order.placed", "urn:bench:shop", order(email, name))
                await exchange.publish(amqp_message(event), routing_key=event.type)
        for start in range(0, messages, 50):
            replies = await asyncio.gather(
                *(
                    contact.post(
                        "/v1/messages",
                        json={
                            "name": "Nguyễn Văn Thử",
                            "email": subject,
                            "subject": f"Câu hỏi {n}",
                            "message": "Xin chào " * 20,
                        },
                    )
                    for n in range(start, min(messages, start + 50))
                )
            )
            assert all(r.status_code == 202 for r in replies), replies[0].text

        async def seeded() -> bool:
            mails: int = await admin.fetchval("SELECT count(*) FROM notifier.deliveries WHERE status = 'sent'")
            pending = sum(
                [await admin.fetchval(f"SELECT count(*) FROM {s}.outbox WHERE published_at IS NULL") for s in SCHEMAS]
            )
            sent: int = await admin.fetchval(
                "SELECT count(*) FROM audit.entries WHERE event_type = 'notification.sent'"
            )
            return mails >= orders + messages + others and sent >= mails and pending == 0

        await until(seeded, "the data in every service")
        entries = await admin.fetchval("SELECT count(*) FROM audit.entries")
        print(
            f"seeded in {time.monotonic() - started:.0f} s: {orders} orders and {messages} messages of the subject,"
            f" {others} other purchasers, {entries} audit entries",
            flush=True,
        )

        for kind in ("access", "erasure"):
            request_id = str(uuid.uuid4())
            event = new_event(
                PRIVACY_REQUEST_CONFIRMED,
                "urn:bench:contact",
                {
                    "request_id": request_id,
                    "kind": kind,
                    "email": subject,
                    "locale": "en",
                    "confirmed_at": datetime.now(UTC).isoformat(),
                },
                purpose="privacy-request",
            )
            sent_at = time.monotonic()
            await exchange.publish(amqp_message(event), routing_key=event.type)

            async def answered(request_id: str = request_id) -> bool:
                return len(arrived.get(request_id, {})) == len(ANSWERING_SERVICES)

            await until(answered, f"the answers to the {kind} request", timeout=300)
            answers = arrived[request_id]
            last = max(at for at, _ in answers.values())
            print(f"{kind}: every service answered in {last - sent_at:.2f} s", flush=True)
            for service in ANSWERING_SERVICES:
                at, size = answers[service]
                print(f"  {service:9} {at - sent_at:6.2f} s  answer {size / 1000:8.1f} kB", flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 orders and 100 messages")
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--others", type=int, default=1000, help="purchasers besides the subject, one order each")
    args = parser.parse_args()
    if args.quick:
        args.orders, args.messages, args.others = 100, 100, 100
    smtp = SmtpServer()
    smtp.start()
    world = new_world()
    world.smtp_port = smtp.port
    await world.create()
    try:
        await run(world, smtp, args.orders, args.messages, args.others)
    finally:
        await world.destroy()
        smtp.stop()


if __name__ == "__main__":
    asyncio.run(main())
