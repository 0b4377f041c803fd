"""The notifier's answer to an erasure, and the mail of a privacy request itself, against the real Postgres and
RabbitMQ: an erased address's waiting e-mails are cancelled and nothing of it stays, except the mail that
tells the person the erasure is done, which nothing refuses and which is deleted once sent."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
from notifier import store
from notifier.app import create
from notifier.tokens import recipient_ref
from notifier_helpers import address, eventually
from spm_common.envelope import new_event
from spm_common.privacy import PRIVACY_REQUEST_CONFIRMED, PrivacyRequestConfirmed
from spm_common.testing.world import running


def waiting(ref: str, purpose: str, template: str) -> store.NewDelivery:
    return store.NewDelivery(
        f"privacy-test-{uuid.uuid4()}", ref, purpose, template, "en", None, f"<{uuid.uuid4()}@x>", None, "{}"
    )


async def test_erasure_cancels_waiting_mail_and_forgets_the_address_but_spares_its_own_mail(
    settings, publish, db: asyncpg.Connection
) -> None:
    erased, other = address("erased"), address("kept")
    key = settings.recipient_key()
    async with running(create(settings)):
        await db.execute("SET search_path TO notifier")
        mine, theirs = recipient_ref(erased, key), recipient_ref(other, key)
        # Waiting for later (in the transaction that records them), so the sender leaves them alone.
        async with db.transaction():
            await store.insert_deliveries(
                db,
                [
                    waiting(mine, "answer-message", "contact-ack"),
                    waiting(mine, "privacy-request", "privacy-erasure"),
                    waiting(theirs, "answer-message", "contact-ack"),
                ],
            )
            await db.execute(
                "UPDATE deliveries SET next_attempt_at = now() + interval '1 hour' WHERE recipient_ref = ANY($1)",
                [mine, theirs],
            )
        await store.suppress(db, [(mine, "hard bounce"), (theirs, "hard bounce")])
        await store.add_unsubscribe(db, mine, "news")
        request = PrivacyRequestConfirmed(
            request_id=uuid.uuid4(), kind="erasure", email=erased.upper(), confirmed_at=datetime.now(UTC)
        )
        await publish(new_event(PRIVACY_REQUEST_CONFIRMED, "urn:spm:tests", request, purpose="privacy-request"))
        await eventually(
            lambda: db.fetchval("SELECT true FROM privacy_answered WHERE request_id = $1", request.request_id)
        )
        left = await db.fetch(
            "SELECT recipient_ref, purpose FROM deliveries WHERE recipient_ref = ANY($1)", [mine, theirs]
        )
        assert sorted((r["recipient_ref"] == mine, r["purpose"]) for r in left) == [
            (False, "answer-message"),
            (True, "privacy-request"),
        ]
        assert await db.fetchval("SELECT count(*) FROM recipients WHERE recipient_ref = $1", mine) == 0
        assert await db.fetchval("SELECT count(*) FROM unsubscribes WHERE recipient_ref = $1", mine) == 0
        assert await db.fetchval("SELECT count(*) FROM recipients WHERE recipient_ref = $1", theirs) == 1
        [answer] = await db.fetch(
            "SELECT body FROM outbox WHERE event_type = 'privacy.request.completed'"
            " AND convert_from(body, 'UTF8') LIKE '%' || $1 || '%'",
            str(request.request_id),
        )
        assert b'"deliveries":1' in answer["body"] and b'"cancelled":1' in answer["body"]
        assert erased.encode() not in answer["body"]


async def test_a_privacy_request_mail_is_deleted_once_sent(settings, db: asyncpg.Connection) -> None:
    async with running(create(settings)):
        pass  # the schema, migrated
    await db.execute("SET search_path TO notifier")
    ref = recipient_ref(address("final"), settings.recipient_key())
    final, ordinary = waiting(ref, "privacy-request", "privacy-erasure"), waiting(ref, "answer-message", "contact-ack")
    await store.insert_deliveries(db, [final, ordinary])
    await db.execute("UPDATE deliveries SET next_attempt_at = '2000-01-01' WHERE recipient_ref = $1", ref)
    claimed = await store.claim_due(db, 2, 60, [])
    assert {r["recipient_ref"] for r in claimed} == {ref}
    outcomes = [new_event("notification.sent", "urn:test", {"n": i}) for i in range(2)]
    done = await store.mark_sent(db, [(r["id"], r["attempts"]) for r in claimed], outcomes)
    assert sorted(done) == sorted(r["id"] for r in claimed)
    # Both outcomes are reported; only the ordinary mail stays in the log.
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE event_id = ANY($1)", [o.id for o in outcomes]) == 2
    rows = await db.fetch("SELECT purpose, status FROM deliveries WHERE recipient_ref = $1", ref)
    assert [(r["purpose"], r["status"]) for r in rows] == [("answer-message", "sent")]
