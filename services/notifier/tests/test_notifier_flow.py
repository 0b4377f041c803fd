"""The notifier end to end: requests over RabbitMQ, deliveries in Postgres, e-mails at a real SMTP server."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import urllib.parse
import uuid
from collections.abc import AsyncIterator

import aio_pika
import asyncpg
import httpx
import orjson
import pytest
from aiormq.exceptions import ChannelAccessRefused, ChannelClosed
from notifier import store
from notifier.app import create
from notifier.settings import Settings
from notifier.tokens import make_token, recipient_ref
from notifier_helpers import FAST, address, dead_letters, delivery_of, eventually, request_event, settled
from spm_common.brokerusers import broker_users, ensure_users, with_credentials
from spm_common.db import INDEX_SCAN_CLAIM
from spm_common.envelope import CloudEvent, amqp_message, new_event
from spm_common.publishers import PUBLISHER_HEADER
from spm_common.testing.smtp import SmtpServer
from spm_common.testing.world import AMQP_URL, OPERATOR_TOKEN, World, running
from spm_common.topology import Topology

OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
MANAGEMENT_URL = os.environ.get("SPM_TEST_RABBITMQ_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672")
_management = urllib.parse.urlsplit(MANAGEMENT_URL)
MANAGEMENT_API = f"{_management.scheme}://{_management.hostname}:{_management.port or 15672}"
MANAGEMENT_AUTH = (_management.username or "", _management.password or "")


async def outbox_events(db: asyncpg.Connection, event_type: str) -> list[dict]:
    rows = await db.fetch("SELECT body FROM notifier.outbox WHERE event_type = $1", event_type)
    return [orjson.loads(bytes(row["body"])) for row in rows]


async def test_a_request_becomes_one_email_and_a_sent_event(settings, publish, db, smtp: SmtpServer) -> None:
    to = address("buyer")
    order = request_event("order-confirmation", to, locale="vi", reference="order:FS-1")
    async with running(create(settings)):
        await publish(order, order)  # the same event twice: one e-mail
        [mail] = await smtp.wait_to(to)
        row = await settled(db, order, "sent")
        await asyncio.sleep(0.3)
    assert len(smtp.to(to)) == 1
    message = mail.message
    assert message["Subject"] == "Đơn hàng FS-2026-000123: giấy phép và liên kết tải về"
    assert "7KQ2M-XW4PD-9TRHC-B3NVA-L6ZEY" in message.get_body(("plain",)).get_content()
    assert message["Message-ID"] == row["message_id"]
    assert mail.mail_from == "no-reply@spmgroup.vn"
    # After sending, the log keeps a reference and the outcome: no address, no content, no license key.
    assert row["request"] is None and row["attempts"] == 1 and row["sent_at"] is not None
    assert row["recipient_ref"] == recipient_ref(to, settings.recipient_key())
    dump = str(await db.fetch("SELECT * FROM notifier.deliveries WHERE request_event_id = $1", order.id))
    assert to not in dump and "7KQ2M" not in dump
    [sent] = [e for e in await outbox_events(db, "notification.sent") if e["data"]["request_event_id"] == order.id]
    assert sent["data"] == {
        "request_event_id": order.id,
        "reference": "order:FS-1",
        "purpose": "fulfil-order",
        "template": "order-confirmation",
        "status": "sent",
        "error": None,
    }
    assert to not in str(sent)


async def test_contact_only_address_gets_its_answers_and_never_news(settings, publish, db, smtp) -> None:
    to = address("visitor")
    ack = request_event("contact-ack", to, message_id="<contact-abc@spmgroup.vn>")
    reply = request_event("contact-reply", to, in_reply_to="<contact-abc@spmgroup.vn>")
    news = request_event("product-news", to)
    recovery = request_event("license-recovery", to)
    upgrade = request_event("upgrade-notice", to)
    async with running(create(settings)):
        await publish(ack, reply, news, recovery, upgrade)
        mails = await smtp.wait_to(to, count=2)
        for refused in (news, recovery, upgrade):
            row = await settled(db, refused, "failed")
            assert "purchasers only" in row["last_error"] and row["request"] is None
        await asyncio.sleep(0.3)
    assert len(smtp.to(to)) == 2
    by_subject = {m.message["Subject"]: m.message for m in mails}
    assert by_subject["We received your message"]["Message-ID"] == "<contact-abc@spmgroup.vn>"
    assert by_subject["Re: Hỏi về giấy phép"]["In-Reply-To"] == "<contact-abc@spmgroup.vn>"
    failed = {e["data"]["request_event_id"]: e["data"] for e in await outbox_events(db, "notification.failed")}
    assert "purchasers only" in failed[news.id]["error"]


async def test_unsubscribed_address_gets_no_more_upgrades_but_still_its_recovery_email(
    settings, publish, db, smtp
) -> None:
    to = address("buyer")
    async with running(create(settings)) as client:
        await publish(request_event("order-confirmation", to))
        await smtp.wait_to(to, count=1)
        first_upgrade = request_event("upgrade-notice", to, locale="vi")
        await publish(first_upgrade)
        mails = await smtp.wait_to(to, count=2)
        notice = mails[-1].message
        assert notice["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        https, mailto = re.findall(r"<([^>]+)>", notice["List-Unsubscribe"])
        assert https.startswith("https://notify.example.com/v1/unsubscribe?token=")
        assert mailto.startswith("mailto:unsubscribe@spmgroup.vn?subject=unsubscribe")
        assert https in notice.get_body(("plain",)).get_content()
        assert https in notice.get_body(("html",)).get_content()
        path = urllib.parse.urlsplit(https)
        url = f"{path.path}?{path.query}"

        page = await client.get(url)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "Hủy đăng ký" in page.text and "Unsubscribe" in page.text and to not in page.text
        one_click = await client.post(
            url, content="List-Unsubscribe=One-Click", headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert one_click.status_code == 200
        assert one_click.json() == {"status": "unsubscribed", "category": "upgrades"}
        again = await client.post(url, headers={"Accept": "text/html"})
        assert again.status_code == 200 and "Đã hủy đăng ký" in again.text

        second_upgrade = request_event("upgrade-notice", to)
        news = request_event("product-news", to)
        recovery = request_event("license-recovery", to)
        await publish(second_upgrade, news, recovery)
        row = await settled(db, second_upgrade, "failed")
        assert "unsubscribed from upgrades" in row["last_error"]
        await settled(db, news, "sent")  # another category: still wanted
        await settled(db, recovery, "sent")
        await asyncio.sleep(0.3)
    subjects = [m.message["Subject"] for m in smtp.to(to)]
    assert subjects.count("SPM Dictionary Pro 5.2: your free upgrade") == 0
    assert subjects.count("SPM Dictionary Pro 5.2: bản nâng cấp miễn phí cho bạn") == 1
    assert "Your license keys and downloads" in subjects
    assert len(subjects) == 4
    withdrawals = [e for e in await outbox_events(db, "notification.unsubscribed") if e["data"]["email"] == to]
    assert [w["data"] for w in withdrawals] == [{"email": to, "category": "upgrades"}]  # once, though asked twice


async def test_unsubscribe_token_cannot_be_moved_to_another_address(settings, db) -> None:
    mine, victim = address("mine"), address("victim")
    token = make_token(mine, "news", settings.recipient_key())
    head, _, mac = token.split(".")
    import base64

    moved = f"{head}.{base64.urlsafe_b64encode(victim.encode()).rstrip(b'=').decode()}.{mac}"
    async with running(create(settings)) as client:
        assert (await client.get(f"/v1/unsubscribe?token={moved}")).status_code == 400
        refused = await client.post(f"/v1/unsubscribe?token={moved}")
        assert refused.status_code == 400 and refused.json() == {"detail": "invalid unsubscribe token"}
        assert victim not in refused.text
        assert (await client.post(f"/v1/unsubscribe?token={token}")).status_code == 200
    refs = {r["recipient_ref"] for r in await db.fetch("SELECT recipient_ref FROM notifier.unsubscribes")}
    assert recipient_ref(mine, settings.recipient_key()) in refs
    assert recipient_ref(victim, settings.recipient_key()) not in refs


async def test_smtp_outage_then_everything_delivered_exactly_once(world: World, publish, db, smtp) -> None:
    settings = world.settings(Settings, **{**FAST, "notifier_smtp_connections": 6})
    recipients = [address(f"outage{i}") for i in range(12)]
    events = [request_event("contact-ack", to) for to in recipients]
    async with running(create(settings)):
        smtp.go_down()
        await publish(*events)

        async def all_tried() -> bool:
            rows = [await delivery_of(db, e) for e in events]
            return all(r is not None and r["attempts"] >= 1 and r["last_error"] for r in rows)

        await eventually(all_tried, timeout=20)
        smtp.come_back()
        await smtp.wait_for(lambda ms: all(any(to in m.rcpt_tos for m in ms) for to in recipients), timeout=15)
        for event in events:
            await settled(db, event, "sent")
        await asyncio.sleep(0.5)
    assert [len(smtp.to(to)) for to in recipients] == [1] * len(recipients)
    attempts = [(await delivery_of(db, e))["attempts"] for e in events]
    assert min(attempts) >= 2


async def test_4xx_is_retried_and_5xx_fails_with_the_reply_and_suppresses(settings, publish, db, smtp) -> None:
    greylisted, unknown = address("grey"), address("unknown")
    async with running(create(settings)):
        await publish(request_event("order-confirmation", unknown))
        await smtp.wait_to(unknown)

        smtp.reply_for_rcpt = "451 4.7.1 greylisted, try again later"
        slow = request_event("contact-ack", greylisted)
        await publish(slow)
        await eventually(lambda: _attempted(db, slow, 2))
        smtp.reply_for_rcpt = None
        await smtp.wait_to(greylisted)

        smtp.reply_for_rcpt = "550 5.1.1 no such user here"
        bounced = request_event("upgrade-notice", unknown)
        await publish(bounced)
        row = await settled(db, bounced, "failed")
        assert row["last_error"] == "550 5.1.1 no such user here" and row["attempts"] == 1
        smtp.reply_for_rcpt = None

        news = request_event("product-news", unknown)
        recovery = request_event("license-recovery", unknown)
        await publish(news, recovery)
        assert "hard bounce" in (await settled(db, news, "failed"))["last_error"]
        await settled(db, recovery, "sent")  # transactional mail it asked for still goes
    assert len(smtp.to(greylisted)) == 1
    assert len(smtp.to(unknown)) == 2


async def _attempted(db: asyncpg.Connection, event, attempts: int) -> bool:
    row = await delivery_of(db, event)
    return row is not None and row["attempts"] >= attempts


async def test_gives_up_after_max_attempts_and_an_operator_retries(world: World, publish, db, smtp) -> None:
    settings = world.settings(Settings, **{**FAST, "notifier_max_attempts": 2})
    to = address("later")
    order = request_event("order-confirmation", to)
    async with running(create(settings)) as client:
        smtp.reply_for_data = "452 4.3.1 insufficient system storage"
        await publish(order)
        row = await settled(db, order, "failed")
        assert row["last_error"].startswith("gave up after 2 attempts: 452")
        assert row["request"] is not None  # kept, so an operator can retry
        smtp.reply_for_data = None

        assert (await client.get("/v1/deliveries")).status_code == 401
        listed = await client.get("/v1/deliveries", params={"status": "failed", "limit": 500}, headers=OPERATOR)
        assert listed.status_code == 200
        [entry] = [d for d in listed.json() if d["request_event_id"] == order.id]
        assert entry["retryable"] is True and entry["template"] == "order-confirmation"
        assert to not in listed.text

        retried = await client.post(
            f"/v1/deliveries/{entry['id']}/retry", headers={**OPERATOR, "X-SPM-Operator": "ops@spm.test"}
        )
        assert retried.status_code == 200, retried.text
        await smtp.wait_to(to)
        row = await settled(db, order, "sent")
        assert row["operator_retries"] == 1 and row["request"] is None and row["retried_by"] == "ops@spm.test"
        again = await client.post(f"/v1/deliveries/{entry['id']}/retry", headers=OPERATOR)
        assert again.status_code == 409
        assert (await client.post("/v1/deliveries/999999999/retry", headers=OPERATOR)).status_code == 404
        assert (await client.post("/v1/deliveries/retry", headers=OPERATOR)).status_code == 200
    assert len(smtp.to(to)) == 1


async def test_failed_deliveries_newest_first_for_the_console(settings, db) -> None:
    """With more failures than a page holds, the console asks for the newest (the oldest-first list had shown
    an operator the 500 oldest of 590 failures, and none of the new ones)."""
    ids = []
    for n in range(3):
        ids.append(
            await db.fetchval(
                "INSERT INTO notifier.deliveries (request_event_id, recipient_ref, purpose, template, locale,"
                " message_id, status, attempts, last_error, failed_at)"
                " VALUES ($1, 'ref', 'fulfil-order', 'order-confirmation', 'vi', $2, 'failed', 1, '550 gone', now())"
                " RETURNING id",
                str(uuid.uuid4()),
                f"<failed-{n}@spm.test>",
            )
        )
    async with running(create(settings)) as client:
        newest = await client.get(
            "/v1/deliveries", params={"status": "failed", "before_id": ids[-1] + 1, "limit": 2}, headers=OPERATOR
        )
        assert newest.status_code == 200, newest.text
        assert [d["id"] for d in newest.json()] == [ids[2], ids[1]]
        older = await client.get(
            "/v1/deliveries", params={"status": "failed", "before_id": ids[1], "limit": 2}, headers=OPERATOR
        )
        assert [d["id"] for d in older.json()][:1] == [ids[0]]
        oldest_first = await client.get("/v1/deliveries", params={"status": "failed", "limit": 500}, headers=OPERATOR)
        assert [d["id"] for d in oldest_first.json()][-3:] == ids
        refused = await client.get("/v1/deliveries", params={"before_id": 0}, headers=OPERATOR)
        assert refused.status_code == 422


async def test_an_operator_lists_suppressions_and_lifts_one_with_a_reason(settings, db) -> None:
    bounced, other = address("bounced"), address("other")
    ref = recipient_ref(bounced, settings.recipient_key())
    other_ref = recipient_ref(other, settings.recipient_key())
    async with running(create(settings)) as client:
        # As a hard bounce leaves them (see the bounce test above).
        await db.executemany(
            "INSERT INTO notifier.recipients (recipient_ref, suppressed_at, suppressed_reason) VALUES ($1, now(), $2)",
            [(ref, "550 5.1.1 no such user"), (other_ref, "550 5.1.1 gone")],
        )
        assert (await client.get("/v1/suppressions")).status_code == 401
        listed = await client.get("/v1/suppressions", params={"limit": 500}, headers=OPERATOR)
        assert listed.status_code == 200
        assert {"recipient_ref": ref, "suppressed_reason": "550 5.1.1 no such user"}.items() <= next(
            s for s in listed.json() if s["recipient_ref"] == ref
        ).items()
        assert bounced not in listed.text

        acting = {**OPERATOR, "X-SPM-Operator": "admin@spm.test"}
        empty = await client.post(f"/v1/suppressions/{ref}/remove", json={"reason": "   "}, headers=acting)
        assert empty.status_code == 422
        assert (
            await client.post("/v1/suppressions/not-hex/remove", json={"reason": "x"}, headers=acting)
        ).status_code == 422
        removed = await client.post(
            f"/v1/suppressions/{ref}/remove", json={"reason": "the buyer fixed the mailbox"}, headers=acting
        )
        assert removed.status_code == 200, removed.text
        again = await client.post(f"/v1/suppressions/{ref}/remove", json={"reason": "twice"}, headers=acting)
        assert again.status_code == 404
        refs = {s["recipient_ref"] for s in (await client.get("/v1/suppressions", headers=OPERATOR)).json()}
        assert ref not in refs and other_ref in refs
    row = await db.fetchrow("SELECT * FROM notifier.recipients WHERE recipient_ref = $1", ref)
    assert row["suppressed_at"] is None and row["unsuppressed_by"] == "admin@spm.test"
    assert row["unsuppressed_reason"] == "the buyer fixed the mailbox"


async def test_invalid_requests_are_recorded_as_failed_with_a_reason(settings, publish, db, smtp) -> None:
    to = address("odd")
    wrong_purpose = request_event("product-news", to, purpose="answer-message")
    missing_keys = request_event("order-confirmation", to, context={"order_id": "FS-9"})
    bad_address = request_event("contact-ack", "not-an-address")
    async with running(create(settings)):
        await publish(wrong_purpose, missing_keys, bad_address)
        assert "not for purpose" in (await settled(db, wrong_purpose, "failed"))["last_error"]
        assert "items" in (await settled(db, missing_keys, "failed"))["last_error"]
        assert "address" in (await settled(db, bad_address, "failed"))["last_error"]
    assert smtp.to(to) == []


async def test_a_request_from_a_service_not_allowed_its_purpose_is_dead_lettered_with_the_reason(
    world: World, settings, publish, db, smtp
) -> None:
    to = address("target")
    # The contact service may ask for answers to messages only; the shop, the releases feed and anyone else
    # holding a login to the broker may ask for nothing.
    contact_asks_for_order = request_event("order-confirmation", to, source="urn:spm:contact")
    contact_asks_for_news = request_event("product-news", to, source="urn:spm:contact")
    shop_asks = request_event("license-recovery", to, source="urn:spm:shop")
    stranger_asks = request_event("contact-ack", to, source="https://evil.example/")
    allowed = request_event("contact-ack", to)
    async with running(create(settings)):
        await publish(contact_asks_for_order, contact_asks_for_news, shop_asks, stranger_asks, allowed)
        await settled(db, allowed, "sent")
        taken = await dead_letters(world.exchange, 4)
    reasons = {message.message_id: (message.headers or {}).get("x-spm-error") for message in taken}
    assert reasons == {
        contact_asks_for_order.id: "PermanentError: source 'urn:spm:contact' may not request 'fulfil-order' mail",
        contact_asks_for_news.id: "PermanentError: source 'urn:spm:contact' may not request 'product-news' mail",
        shop_asks.id: "PermanentError: source 'urn:spm:shop' may not request 'license-recovery' mail",
        stranger_asks.id: "PermanentError: source 'https://evil.example/' may not request 'answer-message' mail",
    }
    refused = [contact_asks_for_order, contact_asks_for_news, shop_asks, stranger_asks]
    assert [await delivery_of(db, event) for event in refused] == [None] * 4
    assert (
        await db.fetchval(
            "SELECT count(*) FROM notifier.inbox WHERE event_id = ANY($1::text[])", [e.id for e in refused]
        )
        == 0
    )
    assert len(smtp.to(to)) == 1  # the contact service's own request only


async def test_a_bug_while_composing_is_retried_and_the_sender_keeps_going(
    world: World, publish, db, smtp, monkeypatch
) -> None:
    """An unexpected error ends neither the SMTP worker nor the sender: the delivery is tried again."""
    from notifier.mail import Composer

    settings = world.settings(Settings, **{**FAST, "notifier_smtp_connections": 1})
    unlucky, other = address("unlucky"), address("other")
    compose = Composer.compose
    failures = []

    def flaky(self: Composer, **kwargs: object) -> object:
        if kwargs["email"] == unlucky and not failures:
            failures.append(kwargs["email"])
            raise RuntimeError("a bug")
        return compose(self, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Composer, "compose", flaky)
    first, second = request_event("order-confirmation", unlucky), request_event("order-confirmation", other)
    async with running(create(settings)):
        await publish(first)
        await publish(second)
        await smtp.wait_to(other)
        await smtp.wait_to(unlucky)
        row = await settled(db, first, "sent")
    assert failures == [unlucky]
    assert row["attempts"] == 2
    assert len(smtp.to(unlucky)) == 1 and len(smtp.to(other)) == 1


async def test_a_connection_the_server_had_ended_delays_the_marking_and_sends_nothing_twice(
    settings, publish, db, smtp: SmtpServer, monkeypatch
) -> None:
    """asyncpg's InternalClientError ("cannot switch to state ..."), raised by a pooled connection whose
    server ended it a moment before, once ended the marking task: the e-mail went out again with its lease."""
    mark_sent, failures = store.mark_sent, []

    async def ended(conn, sent):
        if not failures:
            failures.append(sent)
            raise asyncpg.InternalClientError("cannot switch to state 11; another operation (2) is in progress")
        return await mark_sent(conn, sent)

    monkeypatch.setattr(store, "mark_sent", ended)
    to = address("buyer")
    order = request_event("order-confirmation", to, reference="order:FS-2")
    async with running(create(settings)):
        await publish(order)
        await smtp.wait_to(to)
        row = await settled(db, order, "sent")
    assert len(failures) == 1
    assert row["attempts"] == 1 and len(smtp.to(to)) == 1


async def test_marking_sent_writes_the_outcome_only_of_deliveries_still_leased(settings, db) -> None:
    async with running(create(settings)):
        pass  # the schema, migrated
    await db.execute("SET search_path TO notifier")
    new = [
        store.NewDelivery(f"mark-{i}", f"ref-{i}", "answer-message", "contact-ack", "en", None, f"<m{i}@x>", None, "{}")
        for i in range(2)
    ]
    await store.insert_deliveries(db, new)
    # First in line, so the claim takes these two and leaves whatever other tests left alone.
    await db.execute("UPDATE deliveries SET next_attempt_at = '2000-01-01' WHERE request_event_id LIKE 'mark-%'")
    claimed = await store.claim_due(db, 2, 60, [])
    assert sorted(r["request_event_id"] for r in claimed) == ["mark-0", "mark-1"]
    mine, taken_over = sorted(claimed, key=lambda r: r["id"])
    # Its lease ran out and another sender claimed it again: this sender's outcome for it is stale.
    await db.execute("UPDATE deliveries SET attempts = attempts + 1 WHERE id = $1", taken_over["id"])
    outcomes = [new_event("notification.sent", "urn:test", {"n": i}) for i in range(2)]
    before = await db.fetchval("SELECT count(*) FROM outbox")
    done = await store.mark_sent(
        db,
        [
            store.Sent(mine["id"], mine["attempts"], outcomes[0]),
            store.Sent(taken_over["id"], taken_over["attempts"], outcomes[1]),
        ],
    )
    assert done == [mine["id"]]
    assert await db.fetchval("SELECT count(*) FROM outbox") == before + 1
    assert await db.fetchval("SELECT event_id FROM outbox ORDER BY id DESC LIMIT 1") == outcomes[0].id
    rows = await db.fetch("SELECT status, request FROM deliveries WHERE request_event_id LIKE 'mark-%' ORDER BY id")
    assert [(r["status"], r["request"]) for r in rows] == [("sent", None), ("sending", "{}")]


async def test_the_senders_claim_reads_due_deliveries_by_index_after_thousands_were_sent(settings, db) -> None:
    """As the outbox relay's claim (libs/common's test): the entries of deliveries sent since the last vacuum
    stay in the index of pending ones, and a bitmap scan would read them all on every claim."""
    async with running(create(settings)):
        pass  # the schema, migrated
    await db.execute("SET search_path TO notifier")
    await db.execute(
        "INSERT INTO deliveries (request_event_id, recipient_ref, purpose, template, locale, message_id, request)"
        " SELECT 'swept-' || g, 'ref', 'answer-message', 'contact-ack', 'en', '<m@x>', '{}'"
        " FROM generate_series(1, 5000) AS g"
    )
    await db.execute("UPDATE deliveries SET status = 'sent', request = NULL WHERE request_event_id LIKE 'swept-%'")
    try:
        async with db.transaction():
            await db.execute(INDEX_SCAN_CLAIM)
            plan = await db.fetchval(f"EXPLAIN (FORMAT JSON) {store.CLAIM_DUE}", 200, 60, [])
    finally:
        await db.execute("DELETE FROM deliveries WHERE request_event_id LIKE 'swept-%'")
    assert "Bitmap" not in plan
    assert '"Index Name": "deliveries_due"' in plan


class ServiceUsers:
    """Real RabbitMQ users of every service (`ensure_users`), under a prefix of their own (users are broker-wide)."""

    def __init__(self, world: World) -> None:
        self.prefix = f"{world.name}_{uuid.uuid4().hex[:4]}_"
        self.users = broker_users(world.exchange, self.prefix)
        self.passwords = {u.name: secrets.token_urlsafe(16) for u in self.users}

    def login(self, service: str) -> str:
        return f"{self.prefix}{service}"

    def url(self, service: str) -> str:
        return with_credentials(AMQP_URL, self.login(service), self.passwords[self.login(service)])

    async def publish(
        self, service: str, exchange_name: str, *events: CloudEvent, headers: dict[str, str] | None = None
    ) -> None:
        """Publish as that service's outbox relay does: with its login as the validated user_id."""
        connection = await aio_pika.connect(self.url(service))
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(exchange_name, ensure=False)
            for event in events:
                message = amqp_message(event)
                message.user_id = self.login(service)
                message.headers = headers or {}
                await exchange.publish(message, routing_key=event.type)


@pytest.fixture
async def service_users(world: World) -> AsyncIterator[ServiceUsers]:
    made = ServiceUsers(world)
    await ensure_users(MANAGEMENT_URL, AMQP_URL, made.users, made.passwords)
    yield made
    async with httpx.AsyncClient() as client:
        for name in made.passwords:
            await client.delete(f"{MANAGEMENT_API}/api/users/{name}", auth=MANAGEMENT_AUTH)


async def test_the_notifier_works_as_its_own_rabbitmq_user(world: World, db, smtp, service_users: ServiceUsers) -> None:
    """Its own user may declare its queues, consume, publish its outcomes and dead-letter; the requests come
    from the contact service's user, which may publish notification.requested."""
    to = address("own-user")
    allowed = request_event("contact-ack", to)
    refused = request_event("order-confirmation", to, source="urn:spm:contact")
    prefix = service_users.prefix
    settings = world.settings(Settings, **FAST, notifier_amqp_url=service_users.url("notifier"))
    async with running(create(settings)):
        await service_users.publish("contact", world.exchange, allowed, refused)
        await settled(db, allowed, "sent")
        # The notifier connected as its own user, not with SPM_AMQP_URL's.
        async with httpx.AsyncClient() as client:

            async def connected_as_own_user() -> bool:
                response = await client.get(f"{MANAGEMENT_API}/api/connections", auth=MANAGEMENT_AUTH)
                return any(c.get("user") == f"{prefix}notifier" for c in response.json())

            await eventually(connected_as_own_user, timeout=30)
        [dead] = await dead_letters(world.exchange, 1)
        assert dead.message_id == refused.id
        await eventually(
            lambda: db.fetchval(
                "SELECT count(*) FROM notifier.outbox WHERE event_type = 'notification.sent'"
                " AND published_at IS NOT NULL AND position($1::bytea IN body) > 0",
                allowed.id.encode(),
            )
        )


# --- who published a request: the validated user_id (README, "Notification requests") ---------------------


async def test_a_request_in_another_services_name_is_dead_lettered_and_its_own_is_sent(
    world: World, db, smtp: SmtpServer, service_users: ServiceUsers
) -> None:
    """The contact service's login may publish notification.requested, and writes the orders service's source
    and an order e-mail with license keys of its choosing: the notifier refuses it, as the broker vouches that
    the contact service's user published it. The same request from the orders service's user is sent."""
    forged_to, genuine_to = address("forged"), address("genuine")
    forged = request_event("order-confirmation", forged_to)  # source urn:spm:orders, purpose fulfil-order
    genuine = request_event("order-confirmation", genuine_to)
    settings = world.settings(Settings, **FAST, notifier_amqp_url=service_users.url("notifier"))
    async with running(create(settings)):
        await service_users.publish("contact", world.exchange, forged)
        await service_users.publish("orders", world.exchange, genuine)
        await settled(db, genuine, "sent")
        [dead] = await dead_letters(world.exchange, 1)
        await asyncio.sleep(0.3)
    assert dead.message_id == forged.id
    reason = str((dead.headers or {}).get("x-spm-error"))
    assert "'urn:spm:orders'" in reason and repr(service_users.login("contact")) in reason
    assert forged_to not in reason
    assert smtp.to(forged_to) == [] and len(smtp.to(genuine_to)) == 1
    assert await delivery_of(db, forged) is None


async def test_a_request_retried_by_the_notifier_keeps_its_publisher(
    world: World, db, smtp: SmtpServer, service_users: ServiceUsers
) -> None:
    """A request whose recording fails once goes round the retry queue as the notifier's own copy (published by
    the notifier's user): the copy says the orders service's user published the original, and is sent."""
    to = address("retried")
    request = request_event("order-confirmation", to)
    settings = world.settings(Settings, **FAST, notifier_amqp_url=service_users.url("notifier"), retry_delay_ms=200)
    async with running(create(settings)):
        # The first delivery row written fails (a transient database error), the next ones do not.
        await db.execute(FAIL_ONCE)
        try:
            await service_users.publish("orders", world.exchange, request)
            await settled(db, request, "sent", timeout=20)
            # Its recording was tried twice: failed, then taken from the retry queue.
            assert await db.fetchval("SELECT last_value FROM notifier.test_fail_once") == 2
        finally:
            await db.execute(UNDO_FAIL_ONCE)
    assert len(smtp.to(to)) == 1


async def test_a_copy_forged_by_another_user_is_not_believed(
    world: World, db, smtp: SmtpServer, service_users: ServiceUsers
) -> None:
    """Only the notifier's own copies carry a publisher in a header it believes: the contact service's user
    writing that header onto the exchange is refused by the notifier; writing it straight into the notifier's
    queue by its name, by the broker (a service's user may write only to `X` and its own requeue exchange)."""
    to = address("forged-copy")
    through_exchange = request_event("order-confirmation", to)
    into_queue = request_event("order-confirmation", to)
    as_orders = {PUBLISHER_HEADER: service_users.login("orders")}
    settings = world.settings(Settings, **FAST, notifier_amqp_url=service_users.url("notifier"))
    async with running(create(settings)):
        await service_users.publish("contact", world.exchange, through_exchange, headers=as_orders)
        connection = await aio_pika.connect(service_users.url("contact"))
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            message = amqp_message(into_queue)
            message.user_id = service_users.login("contact")
            message.headers = {**as_orders, "x-spm-attempt": 2}
            with pytest.raises((ChannelAccessRefused, ChannelClosed), match="ACCESS_REFUSED"):
                await channel.default_exchange.publish(
                    message, routing_key=Topology(world.exchange, "notifier").queue_name
                )
        dead = await dead_letters(world.exchange, 1)
        await asyncio.sleep(0.3)
    assert {d.message_id for d in dead} == {through_exchange.id}
    for letter in dead:
        assert repr(service_users.login("contact")) in str((letter.headers or {}).get("x-spm-error"))
    assert smtp.to(to) == []


# A transient failure of the first delivery row written (a sequence: its value outlives the rolled-back
# transaction), so the consumer sends the request round its retry queue once.
FAIL_ONCE = """
CREATE SEQUENCE notifier.test_fail_once;
CREATE FUNCTION notifier.test_fail_once() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    IF nextval('notifier.test_fail_once') = 1 THEN
        RAISE EXCEPTION 'a transient failure, once';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER test_fail_once BEFORE INSERT ON notifier.deliveries
    FOR EACH ROW EXECUTE FUNCTION notifier.test_fail_once();
"""
UNDO_FAIL_ONCE = """
DROP TRIGGER IF EXISTS test_fail_once ON notifier.deliveries;
DROP FUNCTION IF EXISTS notifier.test_fail_once();
DROP SEQUENCE IF EXISTS notifier.test_fail_once;
"""
