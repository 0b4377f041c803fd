"""The trail against the real Postgres and RabbitMQ: events published to the exchange become pseudonymised,
chained entries; the audit role cannot change them; tampering by someone with database access is detected."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest
from audit import admin, signing, store, trail
from audit.app import create
from click.testing import Result
from spm_common.testing.world import AMQP_URL, World, running
from spm_common.topology import Topology
from typer.testing import CliRunner


def order(email: str) -> dict[str, Any]:
    return {
        "order_id": f"FS-TEST-{uuid.uuid4().hex[:6]}",
        "placed_at": "2026-11-29T03:59:12Z",
        "currency": "USD",
        "total": "49.00",
        "purchaser": {"name": "Phạm Thị Thử", "email": email, "phone": "+84 912 000 111"},
        "items": [{"sku": "SPM-DICT-PRO", "product_name": "SPM Dictionary Pro", "quantity": 1, "unit_price": "49.00"}],
        "card_number": "4111111111111111",
    }


async def filler(kit: Any, admin: asyncpg.Connection, n: int) -> list[Any]:
    events = [kit.event("test.filler", {"n": i}) for i in range(n)]
    await kit.publish(events)
    return await kit.wait_for_entries(admin, [e["id"] for e in events])


async def test_events_become_pseudonymised_entries_findable_by_person(
    world: World, audit: httpx.AsyncClient, admin: asyncpg.Connection, kit: Any
) -> None:
    email = f"buyer-{uuid.uuid4().hex[:8]}@example.vn"
    events = [
        kit.event("order.placed", order(email)),
        kit.event(
            "notification.requested",
            {
                "purpose": "fulfil-order",
                "template": "order-confirmation",
                "recipient": {"email": email.upper(), "name": "Phạm Thị Thử"},
                "context": {"items": [{"license_keys": ["7KQ2M-XW4PD-9TRHC-B3NVA-L6ZEY"]}]},
            },
            purpose="fulfil-order",
        ),
        kit.event("contact.message.received", {"message_id": "m-1", "email": email, "locale": "vi"}),
    ]
    await kit.publish(events)
    rows = await kit.wait_for_entries(admin, [e["id"] for e in events])

    assert [r["event_type"] for r in rows] == ["order.placed", "notification.requested", "contact.message.received"]
    assert len({r["subject_ref"] for r in rows}) == 1 and rows[0]["subject_ref"]
    assert rows[1]["purpose"] == "fulfil-order"
    for row in rows:
        for personal in (email, email.upper(), "Phạm", "912 000", "4111111111111111", "7KQ2M"):
            assert personal not in row["payload"]
        assert trail.check_entry(row, row["seq"] - 1, row["prev_hash"]) is None

    response = await audit.get("/v1/audit/events", params={"email": f"  {email.title()} "}, headers=kit.operator)
    assert response.status_code == 200
    found = response.json()["items"]
    assert [i["event_id"] for i in found] == [e["id"] for e in events]
    assert "card_number" not in found[0]["data"]  # card fields are dropped as the event arrives

    first = await audit.get(
        "/v1/audit/events", params={"email": email, "limit": 2, "type": "order.placed"}, headers=kit.operator
    )
    assert [i["event_id"] for i in first.json()["items"]] == [events[0]["id"]]
    page = await audit.get("/v1/audit/events", params={"email": email, "limit": 2}, headers=kit.operator)
    rest = await audit.get(
        "/v1/audit/events", params={"email": email, "limit": 2, "after": page.json()["next"]}, headers=kit.operator
    )
    assert [i["event_id"] for i in page.json()["items"] + rest.json()["items"]] == [e["id"] for e in events]
    assert rest.json()["next"] is None
    assert (
        await audit.get(
            "/v1/audit/events", params={"email": email, "from": "2000-01-01", "to": "2000-01-02"}, headers=kit.operator
        )
    ).json()["items"] == []
    today = datetime.now(UTC).date().isoformat()  # a day given as `to` is included, up to its last instant
    within = await audit.get(
        "/v1/audit/events", params={"email": email, "from": today, "to": today}, headers=kit.operator
    )
    assert [i["event_id"] for i in within.json()["items"]] == [e["id"] for e in events]

    assert (await audit.get("/v1/audit/events")).status_code == 401
    assert (await audit.get("/v1/audit/verify", headers={"Authorization": "Bearer wrong"})).status_code == 401
    verified = await audit.get("/v1/audit/verify", params={"full": "true"}, headers=kit.operator)
    assert verified.json()["ok"] is True and verified.json()["checked"] >= 3


async def test_fields_no_payload_model_declares_never_enter_the_trail(
    audit: httpx.AsyncClient, admin: asyncpg.Connection, kit: Any
) -> None:
    email = f"buyer-{uuid.uuid4().hex[:8]}@example.vn"
    placed = order(email)
    placed["note"] = "secret stuff"
    placed["purchaser"]["note"] = "secret stuff"
    placed["items"][0]["note"] = "secret stuff"
    events = [
        kit.event("order.placed", placed),
        kit.event(
            "contact.message.received", {"message_id": "m-2", "email": email, "locale": "vi", "note": "secret stuff"}
        ),
        kit.event("shop.something.new", {"note": "secret stuff"}),
        # The two types whose entry a reducer makes narrow the declared fields further; they never widen them.
        kit.event(
            "privacy.request.completed",
            {"request_id": "r-1", "service": "orders", "kind": "access", "summary": "none", "note": "secret stuff"},
        ),
        kit.event(
            "site.page.viewed",
            {
                "url": "https://shop.example/",
                "viewed_at": datetime.now(UTC).isoformat(),
                "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0",
                "note": "secret stuff",
            },
        ),
    ]
    await kit.publish(events)
    rows = await kit.wait_for_entries(admin, [e["id"] for e in events])

    assert all("secret stuff" not in row["payload"] and "note" not in row["payload"] for row in rows)
    order_entry, message_entry, unknown, answer, view = (json.loads(row["payload"]) for row in rows)
    assert answer == {"request_id": "r-1", "service": "orders", "kind": "access", "summary": "none"}
    assert view == {"path": "/", "referrer_host": None, "counted": True}
    assert order_entry["order_id"] == placed["order_id"] and order_entry["items"][0]["sku"] == "SPM-DICT-PRO"
    assert message_entry == {"message_id": "m-2", "email_ref": rows[1]["subject_ref"], "locale": "vi"}
    assert unknown == {}  # an event type no service declares: recorded, without its data
    response = await audit.get("/v1/audit/events", params={"email": email}, headers=kit.operator)
    assert "secret stuff" not in response.text and len(response.json()["items"]) == 2


class Rollback(Exception):
    pass


Tamper = Callable[[asyncpg.Connection, int], Awaitable[None]]


async def _update(db: asyncpg.Connection, k: int) -> None:
    await db.execute("UPDATE entries SET payload = '{\"forged\":true}' WHERE seq = $1", k)


async def _delete(db: asyncpg.Connection, k: int) -> None:
    await db.execute("DELETE FROM entries WHERE seq = $1", k)


async def _insert(db: asyncpg.Connection, k: int) -> None:
    """A forged entry at k, correctly chained to k - 1 and correctly hashed, the rest moved up by one."""
    prev = await db.fetchrow("SELECT * FROM entries WHERE seq = $1", k - 1)
    await db.execute("UPDATE entries SET seq = -seq WHERE seq >= $1", k)
    await db.execute("UPDATE entries SET seq = 1 - seq WHERE seq < 0")
    forged = {**dict(prev), "seq": k, "event_id": "forged", "payload": "{}", "prev_hash": prev["hash"]}
    forged["hash"] = trail.entry_hash(forged)
    columns = list(trail.COLUMNS)
    await db.copy_records_to_table("entries", records=[tuple(forged[c] for c in columns)], columns=columns)


async def _reorder(db: asyncpg.Connection, k: int) -> None:
    await db.execute("UPDATE entries SET seq = -1 WHERE seq = $1", k)
    await db.execute("UPDATE entries SET seq = $1 WHERE seq = $1 + 1", k)
    await db.execute("UPDATE entries SET seq = $1 + 1 WHERE seq = -1", k)


async def _append(db: asyncpg.Connection, k: int) -> None:
    """A well-formed entry after the head, the head itself left alone."""
    last = await db.fetchrow("SELECT * FROM entries ORDER BY seq DESC LIMIT 1")
    forged = {**dict(last), "seq": last["seq"] + 1, "event_id": "forged", "prev_hash": last["hash"]}
    forged["hash"] = trail.entry_hash(forged)
    columns = list(trail.COLUMNS)
    await db.copy_records_to_table("entries", records=[tuple(forged[c] for c in columns)], columns=columns)


@pytest.mark.parametrize(
    ("tamper", "broken_at", "problem"),
    [
        (_update, 0, "altered"),
        (_delete, 0, "missing"),
        (_insert, 1, "out of place"),
        (_reorder, 0, "out of place"),
        (_append, None, "inserted"),
    ],
    ids=["update", "delete", "insert", "reorder", "append"],
)
async def test_tampering_in_postgres_is_detected(
    audit: httpx.AsyncClient, admin: asyncpg.Connection, kit: Any, tamper: Tamper, broken_at: int | None, problem: str
) -> None:
    """As the superuser, with triggers off (what an attacker with database access can do), inside a
    transaction that is rolled back so the session's chain stays whole."""
    rows = await filler(kit, admin, 6)
    k = rows[2]["seq"]
    outcome: trail.Verification | None = None
    with pytest.raises(Rollback):
        async with admin.transaction(isolation="repeatable_read"):
            await admin.execute("SET LOCAL search_path TO audit")
            await admin.execute("SET LOCAL session_replication_role = replica")
            assert (await trail.verify(admin, full=True)).ok
            await tamper(admin, k)
            outcome = await trail.verify(admin, full=True)
            raise Rollback
    assert outcome is not None and not outcome.ok
    assert outcome.problem is not None and outcome.problem.startswith(problem)
    if broken_at is not None:
        assert outcome.broken_seq == k + broken_at
    else:
        assert outcome.broken_seq == outcome.head_seq + 1


def admin_command(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    command = Path(sys.executable).parent / "spm-audit-admin"
    env = {**os.environ, **world.env()}
    return subprocess.run([str(command), *args], env=env, capture_output=True, text=True, timeout=60, check=False)


async def test_verify_from_checkpoint_and_in_full_through_api_and_command(
    world: World, audit: httpx.AsyncClient, admin: asyncpg.Connection, kit: Any
) -> None:
    await filler(kit, admin, 3)
    done = await asyncio.to_thread(admin_command, world, "checkpoint")
    assert done.returncode == 0, done.stderr
    checkpoint = json.loads(done.stdout)["head"]
    before = await filler(kit, admin, 4)
    after = await filler(kit, admin, 4)

    incremental = (await audit.get("/v1/audit/verify", headers=kit.operator)).json()
    assert incremental["ok"] is True and incremental["full"] is False
    assert incremental["checked"] == incremental["head"]["seq"] - checkpoint["seq"] + 1
    full = (await audit.get("/v1/audit/verify", params={"full": "true"}, headers=kit.operator)).json()
    assert full["ok"] is True and full["checked"] == full["head"]["seq"]

    victim = after[1]
    async with admin.transaction():
        await admin.execute("SET LOCAL session_replication_role = replica")
        await admin.execute("UPDATE audit.entries SET event_type = 'forged' WHERE seq = $1", victim["seq"])
    try:
        for params in ({}, {"full": "true"}):
            report = (await audit.get("/v1/audit/verify", params=params, headers=kit.operator)).json()
            assert report["ok"] is False
            assert report["first_broken"]["seq"] == victim["seq"]
        cli = await asyncio.to_thread(admin_command, world, "verify", "--full")
        assert cli.returncode == 1 and json.loads(cli.stdout)["first_broken"]["seq"] == victim["seq"]
    finally:
        async with admin.transaction():
            await admin.execute("SET LOCAL session_replication_role = replica")
            await admin.execute("UPDATE audit.entries SET event_type = $2 WHERE seq = $1", victim["seq"], "test.filler")

    # A change before the last checkpoint is past the incremental walk but not the full one; and an entry
    # rewritten with a recomputed hash is caught by the checkpoint kept elsewhere.
    done = await asyncio.to_thread(admin_command, world, "checkpoint")
    assert done.returncode == 0, done.stderr
    victim = before[1]
    forged = {**dict(victim), "event_type": "forged"}
    async with admin.transaction():
        await admin.execute("SET LOCAL session_replication_role = replica")
        await admin.execute(
            "UPDATE audit.entries SET event_type = 'forged', hash = $2 WHERE seq = $1",
            victim["seq"],
            trail.entry_hash(forged),
        )
    try:
        assert (await audit.get("/v1/audit/verify", headers=kit.operator)).json()["ok"] is True
        report = (await audit.get("/v1/audit/verify", params={"full": "true"}, headers=kit.operator)).json()
        assert report["ok"] is False and report["first_broken"]["seq"] == victim["seq"] + 1
        kept = f"{victim['seq']}:{victim['hash']}"
        cli = await asyncio.to_thread(admin_command, world, "verify", "--expect", kept)
        assert cli.returncode == 1
    finally:
        async with admin.transaction():
            await admin.execute("SET LOCAL session_replication_role = replica")
            await admin.execute(
                "UPDATE audit.entries SET event_type = $2, hash = $3 WHERE seq = $1",
                victim["seq"],
                victim["event_type"],
                victim["hash"],
            )
    assert (await audit.get("/v1/audit/verify", params={"full": "true"}, headers=kit.operator)).json()["ok"] is True


async def test_two_replicas_keep_one_unbroken_chain(
    world: World, audit: httpx.AsyncClient, admin: asyncpg.Connection, kit: Any
) -> None:
    async with running(create(kit.settings(world, prefetch=20, consumer_batch=10))):
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(Topology(world.exchange, "audit").queue_name, passive=True)
            assert queue.declaration_result.consumer_count == 2
        events = [kit.event("test.replicas", {"n": i}) for i in range(1500)]
        await kit.publish(events)
        rows = await kit.wait_for_entries(admin, [e["id"] for e in events], timeout=60)
    assert len(rows) == len(events)
    full = (await audit.get("/v1/audit/verify", params={"full": "true"}, headers=kit.operator)).json()
    assert full["ok"] is True, full
    assert full["checked"] == await admin.fetchval("SELECT count(*) FROM audit.entries")
    assert full["head"]["seq"] == await admin.fetchval("SELECT max(seq) FROM audit.entries")


# Signed checkpoints kept elsewhere --------------------------------------------------------------------------


async def _cut_tail(db: asyncpg.Connection, k: int) -> None:
    """The entries after k deleted and the head moved back to k: a chain that is whole, only shorter."""
    await db.execute("DELETE FROM entries WHERE seq > $1", k)
    await db.execute("UPDATE chain_head SET seq = $1, hash = (SELECT hash FROM entries WHERE seq = $1)", k)


async def _rewrite_and_rechain(db: asyncpg.Connection, k: int) -> None:
    """Entry k rewritten, and every entry from it on re-hashed and re-chained, the head moved with them."""
    rows = [dict(r) for r in await db.fetch("SELECT * FROM entries WHERE seq >= $1 ORDER BY seq", k)]
    prev_hash = rows[0]["prev_hash"]
    rows[0]["payload"] = '{"forged":true}'
    for row in rows:
        row["prev_hash"] = prev_hash
        row["hash"] = prev_hash = trail.entry_hash(row)
        await db.execute(
            "UPDATE entries SET payload = $2, prev_hash = $3, hash = $4 WHERE seq = $1",
            row["seq"],
            row["payload"],
            row["prev_hash"],
            row["hash"],
        )
    await db.execute("UPDATE chain_head SET hash = $1", prev_hash)


@pytest.mark.parametrize(
    ("tamper", "named"),
    [(_cut_tail, "missing"), (_rewrite_and_rechain, "altered")],
    ids=["cut-tail", "rewrite-and-rechain"],
)
async def test_a_signed_checkpoint_kept_elsewhere_catches_what_the_chain_alone_cannot(
    audit: httpx.AsyncClient, admin: asyncpg.Connection, kit: Any, tamper: Tamper, named: str
) -> None:
    """The attacker (the superuser, triggers off) also deletes the checkpoints the database holds after the
    change, so the chain verifies in full; the signed checkpoint exported before does not hold any more."""
    signer = kit.settings(kit.world).checkpoint_signer()
    rows = await filler(kit, admin, 6)
    k = rows[2]["seq"]
    outcome: trail.Verification | None = None
    with pytest.raises(Rollback):
        async with admin.transaction(isolation="repeatable_read"):
            await admin.execute("SET LOCAL search_path TO audit")
            await admin.execute("SET LOCAL session_replication_role = replica")
            assert (await trail.checkpoint(admin, signer)).ok
            kept = (await store.signed_checkpoints(admin))[-1]
            assert kept.seq == rows[-1]["seq"] and kept.signed_by([signer.public_key])
            assert (await trail.verify_checkpoints(admin, [kept], [signer.public_key], full=True)).ok

            await tamper(admin, k)
            await admin.execute("DELETE FROM checkpoints WHERE seq >= $1", k)
            assert (await trail.verify(admin, full=True)).ok
            outcome = await trail.verify_checkpoints(admin, [kept], [signer.public_key], full=True)
            raise Rollback
    assert outcome is not None and not outcome.ok
    # Cut: the first entry missing; rewritten: the checkpoint's entry, whose hash is no longer the signed one.
    assert outcome.broken_seq == (k + 1 if named == "missing" else kept.seq)
    assert outcome.problem is not None and outcome.problem.startswith(named)
    assert f"signed checkpoint at {kept.seq}" in outcome.problem


async def in_process(world: World, *args: str) -> Result:
    """`spm-audit-admin ARGS` run in this process (a thread: the command runs its own event loop), much faster
    than a new interpreter each time."""
    return await asyncio.to_thread(CliRunner().invoke, admin.cli, list(args), env=world.env())


async def test_checkpoints_exported_to_a_file_are_verified_from_the_command_line(
    world: World, audit: httpx.AsyncClient, admin: asyncpg.Connection, kit: Any, tmp_path: Path
) -> None:
    rows = await filler(kit, admin, 4)
    assert (await in_process(world, "checkpoint")).exit_code == 0
    kept = tmp_path / "checkpoints.json"
    done = await in_process(world, "checkpoints", "export", str(kept))
    assert done.exit_code == 0, done.output
    exported = json.loads(kept.read_text())
    assert exported["public_key"] == kit.settings(world).checkpoint_signer().public_key
    assert exported["checkpoints"][-1]["seq"] == json.loads(done.stdout)["newest"] >= rows[-1]["seq"]
    good = await in_process(world, "verify", "--checkpoints", str(kept))
    assert good.exit_code == 0, good.output
    assert json.loads(good.stdout)["signed_checkpoints"] == len(exported["checkpoints"])

    # The tail cut off, and the checkpoints of the database that would betray it deleted: committed this time,
    # so the command sees it; put back afterwards.
    k = rows[1]["seq"]
    async with admin.transaction():
        await admin.execute("SET LOCAL search_path TO audit")
        await admin.execute("SET LOCAL session_replication_role = replica")
        head = await admin.fetchrow("SELECT seq, hash FROM chain_head")
        tail = await admin.fetch("SELECT * FROM entries WHERE seq > $1 ORDER BY seq", k)
        checkpoints = await admin.fetch("SELECT * FROM checkpoints WHERE seq > $1 ORDER BY id", k)
        await _cut_tail(admin, k)
        await admin.execute("DELETE FROM checkpoints WHERE seq > $1", k)
    try:
        async with admin.transaction():
            await admin.execute("SET LOCAL search_path TO audit")
            assert (await trail.verify(admin, full=True)).ok  # the chain alone cannot tell
        caught = await in_process(world, "verify", "--checkpoints", str(kept))
        assert caught.exit_code == 1
        report = json.loads(caught.stdout)
        assert report["ok"] is False and report["first_broken"]["seq"] == k + 1
        assert f"signed checkpoint at {exported['checkpoints'][-1]['seq']}" in report["first_broken"]["problem"]
        # Exported again now, the file keeps what it held: it only grows.
        assert (await in_process(world, "checkpoints", "export", str(kept))).exit_code == 0
        assert json.loads(kept.read_text())["checkpoints"] == exported["checkpoints"]
    finally:
        async with admin.transaction():
            await admin.execute("SET LOCAL search_path TO audit")
            await admin.execute("SET LOCAL session_replication_role = replica")
            await admin.copy_records_to_table("entries", records=[tuple(r) for r in tail], columns=list(tail[0].keys()))
            await admin.copy_records_to_table(
                "checkpoints", records=[tuple(r) for r in checkpoints], columns=list(checkpoints[0].keys())
            )
            await admin.execute("UPDATE chain_head SET seq = $1, hash = $2", head["seq"], head["hash"])
    assert (await in_process(world, "verify", "--checkpoints", str(kept))).exit_code == 0

    # A checkpoint the key did not sign (here: its hash changed after signing) is refused, named.
    forged = json.loads(kept.read_text())
    forged["checkpoints"][0]["hash"] = "f" * 64
    kept.write_text(json.dumps(forged))
    refused = await in_process(world, "verify", "--checkpoints", str(kept))
    assert refused.exit_code == 1
    assert json.loads(refused.stdout)["first_broken"]["problem"].startswith("forged")


async def test_a_checkpoint_made_up_in_the_database_cannot_hide_a_rewrite(
    audit: httpx.AsyncClient, admin: asyncpg.Connection, kit: Any
) -> None:
    """The attacker re-chains a rewrite and records a checkpoint of the new head (unsigned, or signed with a key
    of their own): the walk from the last checkpoint would start there. It starts from the last one the
    service's key signed, whose entry no longer has the signed hash."""
    signer = kit.settings(kit.world).checkpoint_signer()
    stranger = signing.Signer(signing.new_private_key())
    rows = await filler(kit, admin, 6)
    k = rows[2]["seq"]
    with pytest.raises(Rollback):
        async with admin.transaction(isolation="repeatable_read"):
            await admin.execute("SET LOCAL search_path TO audit")
            await admin.execute("SET LOCAL session_replication_role = replica")
            assert (await trail.checkpoint(admin, signer)).ok
            signed_head = rows[-1]["seq"]
            await _rewrite_and_rechain(admin, k)
            head_seq, head_hash = await store.head(admin)
            await store.add_checkpoint(
                admin, stranger.sign(head_seq, head_hash, trail.timestamp(rows[-1]["recorded_at"]))
            )
            await admin.execute("INSERT INTO checkpoints (seq, hash) VALUES ($1, $2)", head_seq, head_hash)

            assert (await trail.verify(admin, full=False)).ok  # any checkpoint believed: fooled
            outcome = await trail.verify(admin, full=False, trusted=[signer.public_key])
            raise Rollback
    assert not outcome.ok and outcome.broken_seq == signed_head
    assert outcome.problem is not None and outcome.problem.startswith("altered")


async def test_a_retention_report_is_kept_in_the_trail_with_its_counts(
    audit: httpx.AsyncClient, admin: asyncpg.Connection, kit: Any
) -> None:
    # What a retention job announces (spm_common.retention) is an allow-listed event: the trail keeps all of it.
    report = {"service": "orders", "what": "purchasers", "count": 3, "older_than": "2021-12-05T22:00:00+00:00"}
    events = [kit.event("retention.purged", report)]
    await kit.publish(events)
    [row] = await kit.wait_for_entries(admin, [e["id"] for e in events])
    assert json.loads(row["payload"]) == report
