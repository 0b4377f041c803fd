"""Crypto-shredding against the real Postgres and RabbitMQ: each person's references are made with a key of
their own; erasure destroys it, the entries stay unchanged and the chain verifies; entries recorded before
subject keys existed (the legacy reference under the audit secret) are found by address until the erasure."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import orjson
from audit import store, trail
from audit.privacy_answer import trail_payload
from spm_common.envelope import CloudEvent
from spm_common.testing.world import World

SECRET = b"development-only-audit-secret"  # the test world's SPM_AUDIT_SECRET (the setting's default)


async def answer_of(admin: asyncpg.Connection, request_id: str, timeout: float = 20) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        body = await admin.fetchval(
            "SELECT body FROM audit.outbox WHERE event_type = 'privacy.request.completed'"
            " AND convert_from(body, 'UTF8') LIKE '%' || $1 || '%'",
            request_id,
        )
        if body is not None:
            data: dict[str, Any] = orjson.loads(body)["data"]
            return data
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(request_id)
        await asyncio.sleep(0.05)


def confirmed(kit: Any, kind: str, email: str) -> dict[str, Any]:
    request = {
        "request_id": str(uuid.uuid4()),
        "kind": kind,
        "email": email,
        "locale": "en",
        "confirmed_at": datetime.now(UTC).isoformat(),
    }
    return kit.event("privacy.request.confirmed", request, purpose="privacy-request")


async def append_legacy_entry(admin: asyncpg.Connection, email: str) -> str:
    """An entry as the trail made it before subject keys: its reference under the audit secret itself."""
    event = CloudEvent(
        id=str(uuid.uuid4()), type="order.placed", source="urn:test:legacy", data={"purchaser": {"email": email}}
    )
    await admin.execute("SET search_path TO audit")
    try:
        async with admin.transaction():
            seq, head, now = await store.lock_head(admin)
            entry = trail.make_entry(event, seq + 1, head, SECRET, now)
            await store.append(admin, [tuple(entry[c] for c in trail.COLUMNS)], trail.COLUMNS)
    finally:
        await admin.execute("SET search_path TO public")
    return str(entry["subject_ref"])


async def test_erasure_destroys_the_persons_key_and_hides_their_older_entries(
    world: World, audit: httpx.AsyncClient, admin: asyncpg.Connection, kit: Any
) -> None:
    email, other = f"shred-{uuid.uuid4().hex[:8]}@example.vn", f"keep-{uuid.uuid4().hex[:8]}@example.vn"
    legacy = await append_legacy_entry(admin, email)
    assert legacy == trail.subject_ref(email, SECRET)
    events = [
        kit.event("contact.message.received", {"message_id": "m-1", "email": email.upper(), "locale": "vi"}),
        kit.event("contact.message.received", {"message_id": "m-2", "email": other, "locale": "vi"}),
    ]
    await kit.publish(events)
    rows = await kit.wait_for_entries(admin, [e["id"] for e in events])
    # A reference of the person's own, not the legacy one; the key is stored under a lookup, never the address.
    assert rows[0]["subject_ref"] not in (None, legacy)
    assert (
        await admin.fetchval(
            "SELECT count(*) FROM audit.subject_keys WHERE lookup = $1", trail.key_lookup(email, SECRET)
        )
        == 1
    )

    found = await audit.get("/v1/audit/events", params={"email": email}, headers=kit.operator)
    assert [i["type"] for i in found.json()["items"]] == ["order.placed", "contact.message.received"]

    access = confirmed(kit, "access", email)
    await kit.publish([access])
    exported = await answer_of(admin, access["data"]["request_id"])
    assert [e["type"] for e in exported["export"]["entries"]] == [
        "order.placed",
        "contact.message.received",
        "privacy.request.confirmed",
    ]
    assert set(exported["export"]["entries"][0]) == {"type", "time", "purpose"}

    erasure = confirmed(kit, "erasure", email)
    await kit.publish([erasure])
    erased = await answer_of(admin, erasure["data"]["request_id"])
    assert erased["counts"] == {"entries": 3, "older_entries": 1, "dead_letters": 0} and erased["export"] is None
    assert email not in orjson.dumps(erased).decode()

    found = await audit.get("/v1/audit/events", params={"email": email}, headers=kit.operator)
    assert found.json()["items"] == []
    found = await audit.get("/v1/audit/events", params={"email": other}, headers=kit.operator)
    assert len(found.json()["items"]) == 1
    assert (
        await admin.fetchval("SELECT count(*) FROM audit.entries WHERE subject_ref = $1", rows[0]["subject_ref"]) == 3
    )
    verified = await audit.get("/v1/audit/verify", params={"full": "true"}, headers=kit.operator)
    assert verified.json()["ok"] is True, verified.text

    # Mail after the erasure (the final e-mail) is about a new key: it is not linked to the old entries.
    later = kit.event("notification.sent", {"recipient": {"email": email}})
    await kit.publish([later])
    [entry] = await kit.wait_for_entries(admin, [later["id"]])
    assert entry["subject_ref"] != rows[0]["subject_ref"]


async def test_an_address_only_in_an_unusual_place_still_gets_its_stored_key(
    world: World, audit: httpx.AsyncClient, admin: asyncpg.Connection, kit: Any
) -> None:
    email = f"odd-{uuid.uuid4().hex[:8]}@example.vn"
    first = kit.event("contact.message.received", {"message_id": "m-3", "email": email})
    await kit.publish([first])
    [known] = await kit.wait_for_entries(admin, [first["id"]])
    # The address only in the event's source: not where the batch looks for addresses beforehand.
    odd = {**kit.event("test.odd", {"n": 1}), "source": f"mailto:{email}"}
    await kit.publish([odd])
    [entry] = await kit.wait_for_entries(admin, [odd["id"]])
    assert entry["source"] == f"mailto:ref:{known['subject_ref']}"


def test_the_trail_keeps_a_privacy_answer_without_its_export() -> None:
    data = {"request_id": str(uuid.uuid4()), "service": "orders", "export": {"purchaser": {"name": "Phạm"}}}
    event = CloudEvent(id="x", type="privacy.request.completed", source="urn:test", data=data)
    entry = trail.make_entry(event, 1, trail.GENESIS, SECRET, datetime.now(UTC), trail_payload)
    assert orjson.loads(entry["payload"]) == {"request_id": data["request_id"], "service": "orders"}
