"""No contact message is lost, or answered twice, when every broker connection drops while messages flow."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from contextlib import AsyncExitStack

import orjson
import pytest
from audit.app import create as create_audit
from audit.settings import Settings as AuditSettings
from contact.app import create as create_contact
from contact.settings import Settings as ContactSettings
from notifier.app import create as create_notifier
from notifier.settings import Settings as NotifierSettings
from spm_common.testing.faults import RABBITMQCTL, drop_broker_connections, wait_for_broker_connections
from spm_common.testing.smtp import SmtpServer
from spm_common.testing.world import World, running

pytestmark = pytest.mark.skipif(RABBITMQCTL is None, reason="needs rabbitmqctl to drop the broker connections")


async def test_dropping_every_broker_connection_while_messages_flow_loses_none(world: World, smtp: SmtpServer) -> None:
    tag = uuid.uuid4().hex[:8]
    loop = asyncio.get_running_loop()
    sent: dict[str, str] = {}  # contact message id -> sender address

    async with AsyncExitStack() as stack:
        contact = await stack.enter_async_context(running(create_contact(world.settings(ContactSettings))))
        await stack.enter_async_context(running(create_notifier(world.settings(NotifierSettings))))
        await stack.enter_async_context(running(create_audit(world.settings(AuditSettings))))

        stop_posting = asyncio.Event()

        async def post_until_stopped() -> None:
            n = 0
            while not stop_posting.is_set():
                address = f"restart-{tag}-{n}@example.com"
                response = await contact.post(
                    "/v1/messages",
                    json={"name": "Khách Thử Nghiệm", "email": address, "message": f"Tin nhắn số {n}", "locale": "en"},
                )
                assert response.status_code == 202, response.text
                sent[response.json()["id"]] = address
                n += 1
                await asyncio.sleep(0.02)

        poster = asyncio.create_task(post_until_stopped())
        await asyncio.sleep(1.0)
        dropped = []
        for _ in range(2):
            dropped.append(await drop_broker_connections(world.name))
            await wait_for_broker_connections(world.name, 3)
            await asyncio.sleep(0.5)
        stop_posting.set()
        await poster
        posted = loop.time()
        # At least the three services' connections (a process another test SIGKILLed may linger until its heartbeat).
        assert all(count >= 3 for count in dropped), "each service's connection should have been dropped, twice"

        addresses = set(sent.values())
        await smtp.wait_for(lambda ms: addresses <= {r for m in ms for r in m.rcpt_tos}, timeout=60)
        caught_up = loop.time() - posted
        admin = await world.admin()
        try:

            async def audited() -> Counter[str]:
                rows = await admin.fetch(
                    "SELECT payload FROM audit.entries WHERE event_type = 'contact.message.received'"
                )
                ids = (orjson.loads(row["payload"]).get("message_id") for row in rows)
                return Counter(i for i in ids if i in sent)

            async with asyncio.timeout(30):
                while len(await audited()) < len(sent):
                    await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # a duplicate, if any, has time to arrive
            per_message = await audited()
        finally:
            await admin.close()

    print(
        f"{len(sent)} contact messages across two drops of every broker connection;"
        f" the last acknowledgement sent {caught_up:.1f} s after the last post"
    )
    mails = Counter(r for m in smtp.received for r in m.rcpt_tos if r in addresses)
    assert set(mails) == addresses
    assert set(mails.values()) == {1}, "every message gets exactly one acknowledgement"
    assert set(per_message) == set(sent)
    assert set(per_message.values()) == {1}, "every message gets exactly one audit entry"
