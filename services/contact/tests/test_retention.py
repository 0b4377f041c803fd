"""Retention: old messages and their replies are deleted by the periodic job, and the deletion is announced."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import asyncpg
import pytest
from contact import admin, retention, store
from contact_helpers import Contact, eventually, form, new_address, outbox_events, started
from spm_common.testing.world import World
from typer.testing import CliRunner


async def age(world: World, message_id: str, days: int) -> None:
    conn = await world.admin()
    try:
        await conn.execute(
            "UPDATE contact.messages SET received_at = now() - make_interval(days => $2) WHERE id = $1::uuid",
            message_id,
            days,
        )
    finally:
        await conn.close()


async def exists(world: World, message_id: str) -> bool:
    conn = await world.admin()
    try:
        return bool(await conn.fetchval("SELECT true FROM contact.messages WHERE id = $1::uuid", message_id))
    finally:
        await conn.close()


async def test_messages_past_retention_go_with_their_replies_and_only_ids_are_announced(
    contact: Contact, world: World
) -> None:
    address = new_address()
    ids = []
    async with contact.client() as client:
        for _ in range(3):
            ids.append(
                (await client.post("/v1/messages", json=form(email=address, message="nội dung riêng"))).json()["id"]
            )
    async with contact.operator as operator:
        reply = (await operator.post(f"/v1/messages/{ids[0]}/replies", json={"body": "trả lời riêng"})).json()["id"]
    await age(world, ids[0], 400)
    await age(world, ids[1], 366)
    await age(world, ids[2], 364)

    deleted = await retention.delete_expired(contact.app.state.runtime.pool, 365, contact.settings.source, batch=1)
    assert deleted >= 2
    assert not await exists(world, ids[0]) and not await exists(world, ids[1])
    assert await exists(world, ids[2])
    conn = await world.admin()
    try:
        assert await conn.fetchval("SELECT count(*) FROM contact.replies WHERE id = $1::uuid", reply) == 0
    finally:
        await conn.close()
    async with contact.operator as operator:
        assert (await operator.get(f"/v1/messages/{ids[0]}")).status_code == 404

    events = await outbox_events(world, "contact.messages.deleted")
    announced = {i for e in events for i in e.data["message_ids"]}
    assert {ids[0], ids[1]} <= announced and ids[2] not in announced
    assert reply in {i for e in events for i in e.data["reply_ids"]}
    for event in events:
        assert event.data["count"] == len(event.data["message_ids"])
        assert event.data["retention_days"] == 365
        assert event.purpose == "answer-message"
        text = event.to_json().decode()
        assert address not in text and "nội dung riêng" not in text and "trả lời riêng" not in text


async def test_the_periodic_job_runs_in_the_service(world: World) -> None:
    async with started(world, contact_retention_days=30, contact_retention_interval_seconds=0.2) as service:
        async with service.client() as client:
            message_id = (await client.post("/v1/messages", json=form())).json()["id"]
        await age(world, message_id, 31)

        async def gone() -> bool:
            return not await exists(world, message_id)

        await eventually(gone, timeout=5, what="periodic deletion")


async def test_the_periodic_job_outlives_a_connection_the_server_had_ended(
    contact: Contact, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asyncpg's InternalClientError ("cannot switch to state ..."), raised by a pooled connection whose
    server ended it a moment before, is a failed run to try again, as any database error: it escaped the job
    (which the runtime then logged as a failed task, at error level, and restarted)."""
    async with contact.client() as client:
        message_id = (await client.post("/v1/messages", json=form(email=new_address()))).json()["id"]
    await age(world, message_id, 400)
    delete, failures = store.delete_messages_before, []

    async def ended(conn: Any, cutoff: Any, limit: int) -> Any:
        if not failures:
            failures.append(cutoff)
            raise asyncpg.InternalClientError("cannot switch to state 11; another operation (2) is in progress")
        return await delete(conn, cutoff, limit)

    monkeypatch.setattr(store, "delete_messages_before", ended)
    settings = contact.settings
    runtime = contact.app.state.runtime
    health = runtime.health.loop("contact-retention-test")
    job = asyncio.create_task(retention.run_periodically(runtime.pool, 365, 0.05, settings.source, health))

    async def deleted() -> bool:
        if job.done():
            raise AssertionError(f"the retention job ended: {job.exception()!r}")
        return not await exists(world, message_id)

    try:
        await eventually(deleted, what="the expired message deleted by the next run")
    finally:
        job.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await job
    assert len(failures) == 1


async def test_card_numbers_kept_by_an_earlier_version_are_masked_by_the_operators_command(world: World) -> None:
    """Messages and replies stored as written, before masking on arrival: `spm-contact-admin
    mask-card-numbers` masks them once; run again, it changes nothing; other text stays as it was."""
    message_id, reply_id = uuid.uuid4(), uuid.uuid4()
    conn = await world.admin()
    try:
        await conn.execute(
            "INSERT INTO contact.messages (id, name, email, email_key, subject, body, locale, ack_message_id)"
            " VALUES ($1, 'Khách Cũ', 'cu@example.com', 'cu@example.com', $2, $3, 'vi', 'ack')",
            message_id,
            "thẻ 4111-1111-1111-1111",
            "Trừ tiền thẻ 4242\n4242\n4242\n4242 giúp tôi. Đơn FS-2026-000123.",
        )
        await conn.execute(
            "INSERT INTO contact.replies (id, message_id, body, mail_message_id) VALUES ($1, $2, $3, 'm')",
            reply_id,
            message_id,
            "Chúng tôi không dùng 5555 5555 5555 4444.",
        )
    finally:
        await conn.close()

    async def command() -> str:
        result = await asyncio.to_thread(CliRunner().invoke, admin.cli, ["mask-card-numbers"], env=world.env())
        assert result.exit_code == 0, result.output
        return result.output

    output = await command()
    conn = await world.admin()
    try:
        message = await conn.fetchrow("SELECT subject, body FROM contact.messages WHERE id = $1", message_id)
        reply = await conn.fetchval("SELECT body FROM contact.replies WHERE id = $1", reply_id)
    finally:
        await conn.close()
    assert message is not None
    assert message["subject"] == "thẻ ****-****-****-1111"
    assert message["body"] == "Trừ tiền thẻ ****\n****\n****\n4242 giúp tôi. Đơn FS-2026-000123."
    assert reply == "Chúng tôi không dùng **** **** **** 4444."
    assert "card numbers masked in" in output and "0 message(s)" not in output
    assert await command() == "card numbers masked in 0 message(s) and 0 reply(ies)\n"
