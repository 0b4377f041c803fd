"""A contact message travels the real path: HTTP, Postgres, outbox, RabbitMQ, SMTP and the audit trail."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AsyncExitStack

import asyncpg
from audit.app import create as create_audit
from audit.settings import Settings as AuditSettings
from contact.app import create as create_contact
from contact.settings import Settings as ContactSettings
from notifier.app import create as create_notifier
from notifier.settings import Settings as NotifierSettings
from spm_common.testing.smtp import SmtpServer
from spm_common.testing.world import World, running


async def wait_for_row(conn: asyncpg.Connection, query: str, *args: object, timeout: float = 10) -> asyncpg.Record:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        row = await conn.fetchrow(query, *args)
        if row is not None:
            return row
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(query)
        await asyncio.sleep(0.05)


async def test_contact_message_is_stored_acknowledged_and_audited(world: World, smtp: SmtpServer) -> None:
    address = f"visitor-{uuid.uuid4().hex[:8]}@example.com"
    async with AsyncExitStack() as stack:
        contact = await stack.enter_async_context(running(create_contact(world.settings(ContactSettings))))
        await stack.enter_async_context(running(create_notifier(world.settings(NotifierSettings))))
        await stack.enter_async_context(running(create_audit(world.settings(AuditSettings))))

        response = await contact.post(
            "/v1/messages",
            json={
                "name": "Trần Thị Thử",
                "email": address,
                "subject": "Hỏi về giấy phép",
                "message": "Xin chào",
            },
            headers={"Accept-Language": "vi-VN,vi;q=0.9"},
        )
        assert response.status_code == 202, response.text
        message_id = response.json()["id"]

        [mail] = await smtp.wait_to(address, timeout=5)
        parsed = mail.message
        assert parsed["Subject"] == "Chúng tôi đã nhận được tin nhắn của bạn"
        assert "Hỏi về giấy phép" in parsed.get_body(("plain",)).get_content()
        assert parsed["Message-ID"] == f"<contact-{message_id}@spmgroup.vn>"

        admin = await world.admin()
        try:
            stored = await admin.fetchrow("SELECT email, status FROM contact.messages WHERE id = $1::uuid", message_id)
            assert stored["email"] == address
            assert stored["status"] == "new"
            entry = await wait_for_row(
                admin,
                "SELECT * FROM audit.entries WHERE event_type = 'contact.message.received'"
                " AND payload LIKE '%' || $1 || '%'",
                message_id,
            )
            assert entry["subject_ref"] is not None
            assert address not in entry["payload"]
            assert entry["purpose"] == "answer-message"
        finally:
            await admin.close()
