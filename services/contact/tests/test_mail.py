"""End to end with the real notifier and SMTP server: what a visitor actually receives, and what nobody does."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from contact_helpers import Contact, eventually, form, new_address, publish, random_ip, started, watching
from notifier.app import create as create_notifier
from notifier.settings import Settings as NotifierSettings
from spm_common.envelope import new_event
from spm_common.notifications import NOTIFICATION_REQUESTED, NotificationRequested, Recipient
from spm_common.testing.smtp import SmtpServer
from spm_common.testing.world import World, running

QUIET_SECONDS = 1.0  # how long "no further e-mail" is watched for once the expected ones have arrived


@pytest.fixture(scope="module")
async def system(world: World) -> AsyncIterator[Contact]:
    async with started(world) as contact, running(create_notifier(world.settings(NotifierSettings))):
        yield contact


async def test_the_acknowledgement_is_in_the_visitors_language_and_quotes_the_subject(
    system: Contact, smtp: SmtpServer
) -> None:
    vietnamese, english = new_address(), new_address()
    async with system.client() as client:
        await client.post(
            "/v1/messages",
            json=form(email=vietnamese, subject="Hỏi về giấy phép"),
            headers={"Accept-Language": "vi-VN,vi;q=0.9"},
        )
        await client.post("/v1/messages", json=form(email=english, subject="License question", locale="en"))
    [vi_mail] = await smtp.wait_to(vietnamese)
    [en_mail] = await smtp.wait_to(english)
    assert vi_mail.message["Subject"] == "Chúng tôi đã nhận được tin nhắn của bạn"
    assert "Hỏi về giấy phép" in vi_mail.message.get_body(("plain",)).get_content()
    assert en_mail.message["Subject"] == "We received your message"
    assert "License question" in en_mail.message.get_body(("plain",)).get_content()


async def test_a_reply_threads_under_the_acknowledgement_and_its_delivery_shows(
    system: Contact, smtp: SmtpServer
) -> None:
    address = new_address()
    async with system.client() as client:
        response = await client.post("/v1/messages", json=form(email=address, subject="Mất mã", locale="vi"))
    message_id = response.json()["id"]
    [ack] = await smtp.wait_to(address)
    async with system.operator as operator:
        reply = await operator.post(f"/v1/messages/{message_id}/replies", json={"body": "Mã của bạn đã được gửi lại."})
        assert reply.status_code == 202
        mails = await smtp.wait_to(address, count=2)
        [answer] = [m for m in mails if m is not ack]
        ack_id = ack.message["Message-ID"]
        assert ack_id == f"<contact-{message_id}@spmgroup.vn>"
        assert answer.message["In-Reply-To"] == ack_id
        assert ack_id in answer.message["References"].split()
        assert answer.message["Message-ID"] != ack_id
        assert answer.rcpt_tos == [address]
        assert "Mã của bạn đã được gửi lại." in answer.message.get_body(("plain",)).get_content()

        async def delivered() -> dict[str, object] | None:
            detail = (await operator.get(f"/v1/messages/{message_id}")).json()
            sent = (
                detail["acknowledgement"]["status"] == "sent" and detail["replies"][0]["delivery"]["status"] == "sent"
            )
            return detail if sent else None

        detail = await eventually(delivered, what="delivery reports from the notifier")
        assert detail["status"] == "answered"


async def test_a_burst_from_one_client_gets_429_and_no_e_mails(system: Contact, smtp: SmtpServer) -> None:
    address = new_address()
    limit = system.settings.contact_rate_per_client
    async with system.client(random_ip()) as client:
        statuses = [
            (await client.post("/v1/messages", json=form(email=address))).status_code for _ in range(limit + 10)
        ]
    assert statuses == [202] * limit + [429] * 10
    await smtp.wait_to(address, count=limit)
    await asyncio.sleep(QUIET_SECONDS)
    assert len(smtp.to(address)) == limit


INJECTED = "victim-{tag}@example.com"


async def test_header_injection_sends_nothing_to_the_injected_address(system: Contact, smtp: SmtpServer) -> None:
    tag = uuid.uuid4().hex[:8]
    victim = INJECTED.format(tag=tag)
    sender = new_address()
    attempts = [
        {"name": f"Eve\r\nBcc: {victim}"},
        {"name": f"Eve\nCc: {victim}"},
        {"subject": f"Hello\r\nBcc: {victim}"},
        {"subject": f"Hello\r\n\r\nTo: {victim}"},
        {"email": f"{sender}\r\nBcc: {victim}"},
        {"email": f"{sender}, {victim}"},
        {"email": f"Eve <{victim}>"},
        # RFC 2047 encoded words that decode to a line break and a header.
        {"name": f"=?utf-8?q?Eve=0D=0ABcc:_{victim}?="},
        {"subject": "=?UTF-8?B?SGVsbG8NCkJjYzog" + victim.encode().hex() + "?="},
        {"subject": f"=?iso-8859-1?Q?Hi=0ABcc=3A_{victim}?="},
        {"name": f"Eve%0d%0aBcc:%20{victim}"},
        {"subject": f"Hello\u2028Bcc: {victim}"},
        {"name": f"Eve\x85Bcc: {victim}"},
        {"name": f"Eve\x00Bcc: {victim}"},
    ]
    async with system.client() as client:
        for attempt in attempts:
            response = await client.post("/v1/messages", json=form(**{"email": sender, **attempt}))
            assert response.status_code == 422, attempt
            assert victim not in response.text
        # A valid message afterwards: once its acknowledgement is out, anything queued before it would be too.
        assert (await client.post("/v1/messages", json=form(email=sender))).status_code == 202
    [mail] = await smtp.wait_to(sender)
    await asyncio.sleep(QUIET_SECONDS)
    assert smtp.to(victim) == []
    assert all(tag not in m.raw.decode("utf-8", "replace") for m in smtp.received)
    assert mail.rcpt_tos == [sender]


async def test_a_contact_only_address_receives_answer_message_mail_only(
    system: Contact, world: World, smtp: SmtpServer
) -> None:
    """Contract with the notifier (CONTRACT 5.1): an address known only from a contact message gets its
    acknowledgement and replies; a request for any other purpose to it is refused and reported failed."""
    address = new_address()
    async with system.client() as client:
        await client.post("/v1/messages", json=form(email=address, locale="en"))
    await smtp.wait_to(address)
    news = new_event(
        NOTIFICATION_REQUESTED,
        "urn:spm:orders",
        NotificationRequested(
            purpose="product-news",
            # A template the skeleton notifier can render (an unknown one stops its sender for the whole
            # session), so what is tested is the purpose alone.
            template="contact-ack",
            locale="en",
            recipient=Recipient(email=address),
            context={"subject": "New product"},
            reference="contract-test",
        ),
        purpose="product-news",
    )
    async with watching(world, "notification.failed.#") as outcomes:
        await publish(world, news)

        async def reported() -> list[object]:
            return [o for o in outcomes if o.data.get("request_event_id") == news.id]

        [report] = await eventually(reported, timeout=5, what="the notifier's report on the refused request")
    assert report.type == "notification.failed"
    await asyncio.sleep(QUIET_SECONDS)
    assert len(smtp.to(address)) == 1
