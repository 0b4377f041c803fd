"""The operations pages over HTTP against the real services: the suppression list (admin lifts an entry with
a reason, the notifier keeps who; support may not), and the privacy queue (overdue first; the one extension
with a reason, e-mailed to the person). Each is recorded as operator.action."""

from __future__ import annotations

import hashlib
import re
import uuid

import aio_pika
import httpx
from console_helpers import System, csrf_of, eventually, logged_in
from spm_common.envelope import CONTENT_TYPE
from spm_common.testing.smtp import SmtpServer
from spm_common.testing.world import AMQP_URL


async def _suppressed(system: System) -> str:
    """A recipient suppressed as a hard bounce leaves it; returns its reference."""
    ref = hashlib.sha256(uuid.uuid4().bytes).hexdigest()
    conn = await system.world.admin()
    try:
        await conn.execute(
            "INSERT INTO notifier.recipients (recipient_ref, suppressed_at, suppressed_reason)"
            " VALUES ($1, now(), '550 5.1.1 no such user')",
            ref,
        )
    finally:
        await conn.close()
    return ref


async def _recipient(system: System, ref: str) -> dict:
    conn = await system.world.admin()
    try:
        row = await conn.fetchrow("SELECT * FROM notifier.recipients WHERE recipient_ref = $1", ref)
    finally:
        await conn.close()
    assert row is not None
    return dict(row)


async def test_an_admin_lifts_a_suppression_with_a_reason_and_support_may_not(system: System) -> None:
    ref = await _suppressed(system)
    support = await system.operator("support")
    async with logged_in(system, support) as client:
        page = await client.get("/deliveries")
        assert page.status_code == 200 and ref[:12] in page.text
        assert f"/suppressions/{ref}/remove" not in page.text  # no form for support
        refused = await client.post(
            f"/suppressions/{ref}/remove", data={"csrf_token": csrf_of(page.text), "reason": "please"}
        )
        assert refused.status_code == 403
    assert (await _recipient(system, ref))["suppressed_at"] is not None

    admin = await system.operator("admin")
    async with logged_in(system, admin) as client:
        page = await client.get("/deliveries")
        form = {"csrf_token": csrf_of(page.text)}
        assert f"/suppressions/{ref}/remove" in page.text
        empty = await client.post(f"/suppressions/{ref}/remove", data={**form, "reason": "  "})
        assert empty.status_code == 422 and "Hãy ghi lý do" in empty.text
        assert (await _recipient(system, ref))["suppressed_at"] is not None
        no_csrf = await client.post(f"/suppressions/{ref}/remove", data={"reason": "x"})
        assert no_csrf.status_code == 403
        done = await client.post(f"/suppressions/{ref}/remove", data={**form, "reason": "the mailbox works again"})
        assert done.status_code == 303 and done.headers["location"] == "/deliveries?notice=suppression_removed"
        after = await client.get(done.headers["location"])
        assert "Đã bỏ chặn người nhận." in after.text and ref[:12] not in after.text
    recipient = await _recipient(system, ref)
    assert recipient["suppressed_at"] is None and recipient["unsuppressed_by"] == admin
    assert recipient["unsuppressed_reason"] == "the mailbox works again"
    actions = [(a["action"], a["target"]) for a in await system.actions(admin)]
    assert ("suppression.removed", f"notifier.recipient:{ref}") in actions
    assert ("deliveries.listed", "notifier.deliveries") in actions


async def _privacy_request(system: System, *, overdue: bool) -> tuple[uuid.UUID, str]:
    """A confirmed request in progress, as the confirmation link leaves it (the answering services are held
    back by moving it straight to in-progress); overdue: its deadline passed yesterday."""
    address = f"privacy-{uuid.uuid4().hex[:8]}@example.com"
    async with httpx.AsyncClient(base_url=system.contact_url) as client:
        response = await client.post("/v1/privacy-requests", json={"email": address, "kind": "access"})
    assert response.status_code == 202, response.text
    conn = await system.world.admin()
    try:
        request_id = await conn.fetchval(
            "UPDATE contact.privacy_requests SET status = 'in-progress', confirmed_at = now(),"
            " due_at = CASE WHEN $2 THEN now() - interval '1 day' ELSE now() + interval '30 days' END"
            " WHERE email = $1 RETURNING id",
            address,
            overdue,
        )
    finally:
        await conn.close()
    assert request_id is not None
    return request_id, address


async def test_the_privacy_queue_puts_overdue_first_and_records_an_extension(system: System, smtp: SmtpServer) -> None:
    on_time, address = await _privacy_request(system, overdue=False)
    overdue, _ = await _privacy_request(system, overdue=True)
    support = await system.operator("support")
    async with logged_in(system, support) as client:
        page = await client.get("/privacy")
        assert page.status_code == 200
        assert page.text.index(f"request-{overdue}") < page.text.index(f"request-{on_time}")
        assert "Quá hạn" in page.text and address not in page.text
        form = {"csrf_token": csrf_of(page.text)}
        empty = await client.post(f"/privacy/{on_time}/extension", data={**form, "reason": ""})
        assert empty.status_code == 422
        done = await client.post(
            f"/privacy/{on_time}/extension", data={**form, "reason": "Cần thêm thời gian để tra cứu các bản sao lưu"}
        )
        assert done.status_code == 303, done.text
        after = await client.get(done.headers["location"])
        assert "Đã gia hạn; người yêu cầu sẽ nhận e-mail." in after.text
        assert "Cần thêm thời gian để tra cứu các bản sao lưu" in after.text
        again = await client.post(f"/privacy/{on_time}/extension", data={**form, "reason": "lần nữa"})
        assert again.status_code == 409 and "Không thể gia hạn" in again.text
    mails = await smtp.wait_to(address, count=2, timeout=30)  # the confirmation link, then the extension
    bodies = [str(m.message.get_body(("plain",)).get_content()) for m in mails]
    assert any("Cần thêm thời gian để tra cứu các bản sao lưu" in body for body in bodies)
    actions = [(a["action"], a["target"]) for a in await system.actions(support)]
    assert ("privacy_request.extended", f"contact.privacy_request:{on_time}") in actions
    assert ("privacy_requests.listed", "contact.privacy_requests") in actions
    await eventually(lambda: _extended(system, on_time), what="the extension recorded")


async def _extended(system: System, request_id: uuid.UUID) -> bool:
    conn = await system.world.admin()
    try:
        return bool(
            await conn.fetchval(
                "SELECT extended_at IS NOT NULL FROM contact.privacy_requests WHERE id = $1", request_id
            )
        )
    finally:
        await conn.close()


async def _dead_letter_in_the_notifier(system: System) -> str:
    """A message the notifier cannot read (not JSON): dead-lettered at once. Returns its message id."""
    message_id = f"garbage-{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(system.world.exchange)
        await exchange.publish(
            aio_pika.Message(b"not json", content_type=CONTENT_TYPE, message_id=message_id),
            routing_key="notification.requested",
        )
    return message_id


def _failed_at(page: str, message_id: str) -> str | None:
    """The time shown on the row of that dead letter, if listed."""
    for row in page.split("<tr>"):
        if f"<code>{message_id}</code>" in row:
            return row.split("<td>")[2].split("</td>")[0]
    return None


async def test_an_admin_sees_a_dead_letter_and_replays_it(system: System) -> None:
    message_id = await _dead_letter_in_the_notifier(system)
    support = await system.operator("support")
    async with logged_in(system, support) as client:
        assert (await client.get("/dead-letters")).status_code == 403
    admin = await system.operator("admin")
    async with logged_in(system, admin) as client:

        async def listed() -> str | None:
            page = await client.get("/dead-letters")
            return page.text if _failed_at(page.text, message_id) else None

        page = await eventually(listed, timeout=30, what="the dead letter listed")
        first = _failed_at(page, message_id)
        row = next(r for r in page.split("<tr>") if message_id in r)
        assert "JSONDecodeError" in row
        replayed = await client.post(f"/dead-letters/notifier/{message_id}/replay", data={"csrf_token": csrf_of(page)})
        assert (
            replayed.status_code == 303 and replayed.headers["location"] == "/dead-letters?notice=dead_letter_replayed"
        )
        missing = await client.post(
            f"/dead-letters/notifier/no-such-{message_id}/replay", data={"csrf_token": csrf_of(page)}
        )
        assert missing.status_code == 404

        async def failed_again() -> bool:
            again = _failed_at((await client.get("/dead-letters")).text, message_id)
            return again is not None and again != first

        # Replayed to the notifier's queue, it fails again (it is still not JSON) and is back, failed later.
        await eventually(failed_again, timeout=30, what="the replayed message failed again")
        page = (await client.get("/dead-letters")).text
        everything = await client.post("/dead-letters/notifier/replay", data={"csrf_token": csrf_of(page)})
        assert everything.headers["location"] == "/dead-letters?notice=dead_letters_replayed"
        assert "Đã phát lại các sự kiện." in (await client.get(everything.headers["location"])).text
    actions = [(a["action"], a["target"]) for a in await system.actions(admin)]
    assert ("dead_letter.replayed", f"notifier.dead_letter:{message_id}") in actions
    assert ("dead_letters.replayed", "notifier.dead_letters") in actions


def _queue_row(page: str, service: str) -> list[str]:
    """The cells of that service's row in the system page's queue table (queue name first)."""
    row = re.search(rf'<tr id="queue-{service}">(.*?)</tr>', page, re.S)
    assert row, f"no queue row for {service}"
    return [
        re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row.group(1), re.S)
    ]


async def test_the_system_page_shows_each_queue_and_its_dead_letters(system: System) -> None:
    """Depths come from RabbitMQ's management API with the read-only spm_monitor login; a message the orders
    service cannot read shows in its dead-letter column (the broker's statistics lag by up to 5 s)."""
    services = ("contact", "orders", "notifier", "audit")
    async with logged_in(system, await system.operator("admin")) as client:
        page = (await client.get("/system")).text
        for service in services:
            assert _queue_row(page, service)[0] == f"{system.world.exchange}.{service}"
        before = int(_queue_row(page, "orders")[5])
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.get_exchange(system.world.exchange)
            await exchange.publish(
                aio_pika.Message(b"not json", content_type=CONTENT_TYPE, message_id=f"garbage-{uuid.uuid4().hex[:8]}"),
                routing_key="order.placed",
            )

        async def counted() -> str | None:
            shown = (await client.get("/system")).text
            # Each service consumes its queue (once the statistics have caught up with its start).
            consuming = all(int(_queue_row(shown, service)[3]) >= 1 for service in services)
            return shown if consuming and int(_queue_row(shown, "orders")[5]) == before + 1 else None

        page = await eventually(counted, timeout=30, what="the dead letter counted on the system page")
        assert 'class="error">' in re.search(r'<tr id="queue-orders">.*?</tr>', page, re.S).group(0)  # type: ignore[union-attr]
        # In English too.
        await client.post("/language", data={"csrf_token": csrf_of(page), "lang": "en", "next": "/system"})
        english = (await client.get("/system")).text
        assert "In the dead-letter queue" in english and "the read-only spm_monitor login" in english
