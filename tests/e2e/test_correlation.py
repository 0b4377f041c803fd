"""The id of the HTTP request travels: into the events it causes (`correlationid`) and into the log lines of
the consumers that handle them; and no line of the whole flow names the visitor."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from contextlib import AsyncExitStack

import orjson
from audit.app import create as create_audit
from audit.settings import Settings as AuditSettings
from contact.app import create as create_contact
from contact.settings import Settings as ContactSettings
from notifier.app import create as create_notifier
from notifier.settings import Settings as NotifierSettings
from spm_common.testing.logs import CapturedLogs, captured_json_logs
from spm_common.testing.smtp import SmtpServer
from spm_common.testing.world import World, running


def processed(logs: CapturedLogs, request_id: str) -> list[str]:
    return sorted(
        str(line.get("event_type"))
        for line in logs.lines
        if line.get("event") == "event processed" and line.get("correlation_id") == request_id
    )


async def test_the_request_id_travels_into_events_and_consumer_logs(world: World, smtp: SmtpServer) -> None:
    request_id = f"req-{uuid.uuid4()}"
    address = f"correlation-{uuid.uuid4().hex[:8]}@example.com"
    name = "Phạm Thị Tương Quan"
    with captured_json_logs("e2e") as logs:
        async with AsyncExitStack() as stack:
            contact = await stack.enter_async_context(running(create_contact(world.settings(ContactSettings))))
            await stack.enter_async_context(running(create_notifier(world.settings(NotifierSettings))))
            await stack.enter_async_context(running(create_audit(world.settings(AuditSettings))))

            response = await contact.post(
                "/v1/messages",
                json={"name": name, "email": address, "subject": "Giấy phép", "message": "Xin chào", "locale": "vi"},
                headers={"X-Request-ID": request_id},
            )
            assert response.status_code == 202, response.text
            assert response.headers["X-Request-ID"] == request_id
            message_id = response.json()["id"]
            await smtp.wait_to(address, timeout=5)
            # The audit consumer logs both events; the notifier logs the request it handled. (The outcome,
            # notification.sent, may follow under the same id, to audit and contact: checked below.)
            expected = Counter(["contact.message.received", "notification.requested", "notification.requested"])
            async with asyncio.timeout(10):
                while not expected <= Counter(processed(logs, request_id)):
                    await asyncio.sleep(0.05)

    admin = await world.admin()
    try:
        bodies = [orjson.loads(row["body"]) for row in await admin.fetch("SELECT body FROM contact.outbox")]
    finally:
        await admin.close()
    caused = [
        b
        for b in bodies
        if b["data"].get("message_id") == message_id or b["data"].get("reference") == f"contact.message:{message_id}"
    ]
    assert sorted(b["type"] for b in caused) == ["contact.message.received", "notification.requested"]
    assert all(b["correlationid"] == request_id for b in caused)

    access = [line for line in logs.lines if line.get("event") == "request" and line.get("request_id") == request_id]
    assert len(access) == 1 and access[0]["correlation_id"] == request_id and access[0]["status"] == 202
    # Whatever a consumer processed under this correlation id is an event the request caused, directly or
    # further down the line (the notifier's notification.sent carries it on).
    admin = await world.admin()
    try:
        downstream = [orjson.loads(row["body"]) for row in await admin.fetch("SELECT body FROM notifier.outbox")]
    finally:
        await admin.close()
    descendants = {b["id"] for b in caused} | {b["id"] for b in downstream if b.get("correlationid") == request_id}
    for line in logs.lines:
        if line.get("event") == "event processed" and line.get("correlation_id") == request_id:
            assert line["event_id"] in descendants
    assert address not in logs.text and name not in logs.text
