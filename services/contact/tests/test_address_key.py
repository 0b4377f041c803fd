"""Messages are found by their address in the one spelling of every service (`normalise_address`), whatever
case or Unicode composition the visitor and the privacy request used, and migration 0006 gives the messages
received before it the same key the service writes now."""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

from contact.settings import MIGRATIONS
from contact_helpers import Contact, eventually, form, outbox_events, publish
from spm_common.addresses import normalise_address
from spm_common.envelope import new_event
from spm_common.migrations import migrate
from spm_common.privacy import PRIVACY_REQUEST_COMPLETED, PRIVACY_REQUEST_CONFIRMED, PrivacyRequestConfirmed
from spm_common.testing.world import World, new_world

# Where Postgres's lower() and Python's differ ("İ", a final "Σ"), next to plain ones.
SPELLINGS = [
    "Ada.Lovelace@example.com",
    "İLKER@example.com",
    "ΟΔΥΣΣΕΥΣ@example.com",
    "ΣΑΣ.ΣΑΣ@example.com",
    "Α.Σ@example.com",
    "ΑΣ'Β@example.com",
    "ΑΣ-Β@example.com",
    "Đặng.Thị@example.com",
    "e\u0301cole@example.com",  # decomposed: NFC makes it one "é"
    "ǅemal@example.com",
    "STRAẞE@example.com",
]


async def test_migration_0006_keys_earlier_messages_as_the_service_keys_new_ones(tmp_path: Path) -> None:
    before = tmp_path / "migrations"
    before.mkdir()
    for path in sorted(MIGRATIONS.glob("000[1-5]_*.sql")):
        shutil.copy(path, before / path.name)
    # A database of its own: the migrations name the schema "contact", which the session's service uses.
    world = new_world()
    await world.create()
    try:
        conn = await world.admin()
        try:
            await migrate(conn, "contact", before)
            await conn.executemany(
                "INSERT INTO contact.messages (id, name, email, body, locale, ack_message_id)"
                " VALUES ($1, 'Người Thử', $2, 'Xin chào', 'vi', $3)",
                [(uuid.uuid4(), email, f"<{uuid.uuid4()}@example.com>") for email in SPELLINGS],
            )
            applied = await migrate(conn, "contact", MIGRATIONS)
            assert applied[0] == "contact:0006_messages_address_key"
            rows = await conn.fetch("SELECT email, email_key FROM contact.messages")
        finally:
            await conn.close()
    finally:
        await world.destroy()
    assert {row["email"]: row["email_key"] for row in rows} == {email: normalise_address(email) for email in SPELLINGS}


async def test_a_privacy_request_finds_a_message_sent_in_another_spelling(contact: Contact, world: World) -> None:
    unique = uuid.uuid4().hex[:8]
    # As the visitor typed it: "İ" and a word-final "Σ", which Postgres's lower() spells otherwise than Python.
    typed = f"{unique}.İLKER.ΟΔΥΣΣΕΥΣ@Example.com"
    async with contact.client() as client:
        response = await client.post("/v1/messages", json=form(email=typed, subject=f"Hỏi {unique}"))
    assert response.status_code == 202
    async with contact.operator as operator:
        inbox = (await operator.get("/v1/messages", params={"q": unique})).json()
    # What the operator sees is the address as typed (domain in lower case), not the key.
    assert [item["email"] for item in inbox["items"]] == [f"{unique}.İLKER.ΟΔΥΣΣΕΥΣ@example.com"]

    request = PrivacyRequestConfirmed(
        request_id=uuid.uuid4(),
        kind="access",
        email=f"{unique}.İlker.Οδυσσευς@example.com",
        confirmed_at=datetime.now(UTC),
    )
    await publish(
        world, new_event(PRIVACY_REQUEST_CONFIRMED, contact.settings.source, request, purpose="privacy-request")
    )

    async def answered() -> dict[str, int] | None:
        for event in await outbox_events(world, PRIVACY_REQUEST_COMPLETED):
            if event.data["request_id"] == str(request.request_id):
                return dict(event.data["counts"])
        return None

    assert await eventually(answered, what="contact's answer") == {"messages": 1, "replies": 0}
