"""Each service receives the outcomes of its own e-mails only: the notifier routes `notification.sent` and
`notification.failed` to `<type>.<requester>`, and the contact service's queue binds only `.contact`."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
from contact.app import create as create_contact
from contact.settings import Settings as ContactSettings
from notifier.app import create as create_notifier
from notifier.settings import Settings as NotifierSettings
from spm_common.envelope import new_event
from spm_common.metrics import EVENTS_CONSUMED
from spm_common.notifications import NOTIFICATION_FAILED, NOTIFICATION_SENT, NotificationRequested
from spm_common.publishers import amqp_login
from spm_common.testing.outside import publish
from spm_common.testing.smtp import SmtpServer
from spm_common.testing.world import AMQP_URL, World, new_world, running

OUTCOMES = (NOTIFICATION_SENT, NOTIFICATION_FAILED)
RESULTS = ("processed", "duplicate", "ignored")


def contact_deliveries() -> dict[str, float]:
    """Outcomes taken from the contact service's queue so far, whatever became of them."""
    return {
        event_type: sum(EVENTS_CONSUMED.labels("contact", event_type, result)._value.get() for result in RESULTS)
        for event_type in OUTCOMES
    }


def order_mail(address: str, template: str) -> NotificationRequested:
    return NotificationRequested.model_validate(
        {
            "purpose": "fulfil-order",
            "template": template,
            "recipient": {"email": address},
            "reference": f"orders.order:{uuid.uuid4()}",
            "context": {
                "order_id": "FS-2026-ROUTING",
                "currency": "USD",
                "total": "49.00",
                "items": [{"product_name": "SPM Dictionary Pro"}],
            },
        }
    )


async def outbox_routing_keys(world: World) -> dict[str, str]:
    admin = await world.admin()
    try:
        rows = await admin.fetch("SELECT body, routing_key FROM notifier.outbox WHERE event_type = ANY($1)", OUTCOMES)
    finally:
        await admin.close()
    return {bytes(r["body"]).decode(): r["routing_key"] for r in rows}


@pytest.fixture
async def world(smtp: SmtpServer) -> AsyncIterator[World]:
    """A world of this test's own: the session's may still hold another test's outcomes on their way, which
    contact's counter would count."""
    instance = new_world()
    instance.smtp_port = smtp.port
    await instance.create()
    try:
        yield instance
    finally:
        await instance.destroy()


async def test_the_orders_mail_outcomes_never_reach_the_contact_service(world: World, smtp: SmtpServer) -> None:
    buyer = f"routing-{uuid.uuid4().hex[:8]}@example.com"
    visitor = f"routing-{uuid.uuid4().hex[:8]}@example.com"
    async with AsyncExitStack() as stack:
        contact = await stack.enter_async_context(running(create_contact(world.settings(ContactSettings))))
        await stack.enter_async_context(running(create_notifier(world.settings(NotifierSettings))))
        before = contact_deliveries()

        # Two e-mails the orders service asks for, as its relay publishes them, that both fail: one refused on
        # arrival, one at rendering (its context lacks what the template needs); each path enqueues an outcome.
        for template in ("order-confirmation", "no-such-template"):
            request = new_event("notification.requested", "urn:spm:orders", order_mail(buyer, template))
            await publish(
                world.exchange,
                request.type,
                request.data,
                source=request.source,
                event_id=request.id,
                user_id=amqp_login(AMQP_URL),
            )
        # Then a visitor's message: its acknowledgement's outcome is the contact service's own.
        response = await contact.post(
            "/v1/messages",
            json={"name": "Lê Văn Định Tuyến", "email": visitor, "subject": "Hỏi", "message": "Xin chào"},
        )
        assert response.status_code == 202, response.text
        await smtp.wait_to(visitor, timeout=10)
        async with asyncio.timeout(20):
            while contact_deliveries()[NOTIFICATION_SENT] - before[NOTIFICATION_SENT] < 1:
                await asyncio.sleep(0.05)
            keys = await outbox_routing_keys(world)
            while sum("orders.order:" in body for body in keys) < 2:
                await asyncio.sleep(0.05)
                keys = await outbox_routing_keys(world)
        await asyncio.sleep(0.5)  # a stray delivery would be counted by now: the consumer lingers milliseconds

        after = contact_deliveries()
    assert after[NOTIFICATION_SENT] - before[NOTIFICATION_SENT] == 1  # the acknowledgement's, nothing else
    assert after[NOTIFICATION_FAILED] - before[NOTIFICATION_FAILED] == 0
    orders_keys = sorted(key for body, key in keys.items() if "orders.order:" in body)
    assert orders_keys == ["notification.failed.orders", "notification.failed.orders"]
    assert "notification.sent.contact" in keys.values()
