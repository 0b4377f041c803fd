"""POST /v1/messages against the real Postgres and RabbitMQ: storing, refusing, spam and rate limits."""

from __future__ import annotations

import asyncio
import unicodedata
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from contact import store
from contact.settings import Settings
from contact_helpers import Contact, form, new_address, outbox_events, random_ip, started
from spm_common.testing.clock import clear_of_window_edges
from spm_common.testing.world import World


async def stored(world: World, email: str) -> list[dict[str, object]]:
    conn = await world.admin()
    try:
        rows = await conn.fetch("SELECT * FROM contact.messages WHERE email = $1", email)
    finally:
        await conn.close()
    return [dict(row) for row in rows]


async def current_policy_version(world: World) -> int:
    conn = await world.admin()
    try:
        return int(
            await conn.fetchval("SELECT max(version) FROM contact.privacy_policies WHERE effective_from <= now()")
        )
    finally:
        await conn.close()


async def test_a_message_is_stored_normalised_with_the_policy_in_force_and_announced(
    contact: Contact, world: World
) -> None:
    address = new_address()
    async with contact.client() as client:
        response = await client.post(
            "/v1/messages",
            json=form(
                name=unicodedata.normalize("NFD", "  Nguyễn Thị Thử "),
                email=address,
                subject="  Hỏi về giấy phép  ",
                message=" Xin chào,\r\nTôi cần giúp đỡ. ",
            ),
            headers={"Accept-Language": "vi-VN,vi;q=0.9,en;q=0.5"},
        )
    assert response.status_code == 202, response.text
    message_id = response.json()["id"]

    [row] = await stored(world, address)
    assert str(row["id"]) == message_id
    assert row["name"] == unicodedata.normalize("NFC", "Nguyễn Thị Thử")
    assert row["subject"] == "Hỏi về giấy phép"
    assert row["body"] == "Xin chào,\nTôi cần giúp đỡ."
    assert row["locale"] == "vi"
    assert row["status"] == "new"
    assert row["policy_version"] == await current_policy_version(world)

    [received] = [
        e for e in await outbox_events(world, "contact.message.received") if e.data["message_id"] == message_id
    ]
    assert received.purpose == "answer-message"
    assert received.data["privacy_policy_version"] == row["policy_version"]
    assert "body" not in received.data and "name" not in received.data
    [ack] = [
        e
        for e in await outbox_events(world, "notification.requested")
        if e.data["reference"] == f"contact.message:{message_id}"
    ]
    assert ack.purpose == ack.data["purpose"] == "answer-message"
    assert ack.data["template"] == "contact-ack"
    assert ack.data["locale"] == "vi"
    assert ack.data["context"] == {"subject": "Hỏi về giấy phép"}
    assert ack.data["message_id"] == f"<contact-{message_id}@spmgroup.vn>"


async def test_the_form_locale_wins_over_accept_language(contact: Contact, world: World) -> None:
    address = new_address()
    async with contact.client() as client:
        response = await client.post(
            "/v1/messages", json=form(email=address, locale="en"), headers={"Accept-Language": "vi"}
        )
    assert response.status_code == 202
    assert (await stored(world, address))[0]["locale"] == "en"


async def test_invalid_input_is_422_naming_the_field_without_echoing_it(contact: Contact, world: World) -> None:
    address = new_address()
    injected = "Eve\r\nBcc: victim-8f3a@example.com"
    async with contact.client() as client:
        response = await client.post("/v1/messages", json=form(email=address, name=injected, message="secret text"))
        assert response.status_code == 422
        [error] = response.json()["detail"]
        assert error["loc"] == ["body", "name"]
        assert "victim-8f3a" not in response.text and "secret text" not in response.text

        response = await client.post("/v1/messages", json={"name": "A", "email": "not-an-address", "message": ""})
        assert response.status_code == 422
        assert {tuple(e["loc"]) for e in response.json()["detail"]} == {("body", "email"), ("body", "message")}
        assert "not-an-address" not in response.text

        response = await client.post("/v1/messages", content=b"{not json", headers={"Content-Type": "application/json"})
        assert response.status_code == 422

        response = await client.post(
            "/v1/messages", content=b"name=A&email=a%40example.com", headers={"Content-Type": "text/plain"}
        )
        assert response.status_code == 422
        assert [e["loc"] for e in response.json()["detail"]] == [["body"]]
    assert await stored(world, address) == []


async def test_a_body_over_the_limit_is_413(contact: Contact) -> None:
    huge = form(message="x" * 1_000_000)
    async with contact.client() as client:
        response = await client.post("/v1/messages", json=huge)
        assert response.status_code == 413
        assert response.json() == {"detail": "request body too large"}

        async def chunks() -> AsyncIterator[bytes]:
            # No Content-Length: the limit must also hold while the body streams in.
            yield b'{"name": "A", "email": "a@example.com", "message": "'
            for _ in range(100):
                yield b"x" * 10_000
            yield b'"}'

        response = await client.post("/v1/messages", content=chunks(), headers={"Content-Type": "application/json"})
        assert response.status_code == 413


async def test_the_honeypot_answers_202_and_keeps_nothing(contact: Contact, world: World) -> None:
    address = new_address("bot")
    async with contact.client() as client:
        response = await client.post("/v1/messages", json=form(email=address, website="http://spam.example.com"))
    assert response.status_code == 202
    uuid.UUID(response.json()["id"])
    assert await stored(world, address) == []
    requests = await outbox_events(world, "notification.requested")
    assert all(e.data["recipient"]["email"] != address for e in requests)


async def test_a_database_lost_under_the_write_is_a_503_and_the_next_form_is_stored(
    contact: Contact, world: World
) -> None:
    """Found by the fault suite: a connection cut under the write answered 500 with a traceback."""
    address, after = new_address(), new_address()
    admin = await world.admin()
    try:
        async with admin.transaction():
            # The write waits on this lock, so its connection can be killed under it, mid-statement.
            await admin.execute("LOCK TABLE contact.messages IN SHARE MODE")
            async with contact.client() as client:
                posting = asyncio.create_task(client.post("/v1/messages", json=form(email=address)))
                for _ in range(200):
                    killed = await admin.fetchval(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE datname = $1 AND usename = 'spm_contact' AND wait_event_type = 'Lock'",
                        world.name,
                    )
                    if killed:
                        break
                    await asyncio.sleep(0.05)
                assert killed, "the write waited on the lock"
                response = await posting
    finally:
        await admin.close()
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert "try again" in response.json()["detail"]
    assert await stored(world, address) == []
    async with contact.client() as client:
        assert (await client.post("/v1/messages", json=form(email=after))).status_code == 202
    assert len(await stored(world, after)) == 1


async def test_a_connection_the_server_had_ended_is_a_503_too(
    contact: Contact, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asyncpg's InternalClientError ("cannot switch to state ..."), raised by a pooled connection whose
    server ended it a moment before, is a database error like any other (it was a 500 here)."""
    admit, failures = store.admit, []

    async def ended(conn: Any, attempts: Any) -> Any:
        if not failures:
            failures.append(attempts)
            raise asyncpg.InternalClientError("cannot switch to state 11; another operation (2) is in progress")
        return await admit(conn, attempts)

    monkeypatch.setattr(store, "admit", ended)
    address, after = new_address(), new_address()
    async with contact.client() as client:
        response = await client.post("/v1/messages", json=form(email=address))
        assert (response.status_code, response.headers.get("Retry-After")) == (503, "5"), response.text
        assert (await client.post("/v1/messages", json=form(email=after))).status_code == 202
    assert len(failures) == 1
    assert await stored(world, address) == []
    assert len(await stored(world, after)) == 1


async def test_a_burst_from_one_client_is_limited_and_others_are_not(contact: Contact, world: World) -> None:
    await clear_of_window_edges(Settings.model_fields["contact_rate_client_window_seconds"].default, 7200, 7300)
    address = new_address()
    ip = random_ip()
    statuses = []
    async with contact.client(ip) as client:
        for _ in range(8):
            response = await client.post("/v1/messages", json=form(email=address))
            statuses.append(response.status_code)
            if response.status_code == 429:
                retry_after = int(response.headers["Retry-After"])
                assert 1 <= retry_after <= contact.settings.contact_rate_client_window_seconds
                assert "detail" in response.json()
    assert statuses == [202] * 5 + [429] * 3
    assert len(await stored(world, address)) == 5
    async with contact.client() as other:
        assert (await other.post("/v1/messages", json=form())).status_code == 202

    conn = await world.admin()
    try:
        buckets = [row["bucket"] for row in await conn.fetch("SELECT bucket FROM contact.rate_windows")]
    finally:
        await conn.close()
    assert buckets and all(ip not in bucket for bucket in buckets)


async def test_the_limit_holds_across_replicas_and_restarts(contact: Contact, world: World) -> None:
    await clear_of_window_edges(Settings.model_fields["contact_rate_client_window_seconds"].default, 7200, 7300)
    ip = random_ip()
    async with started(world) as replica:
        for service in (contact, replica, contact, replica, contact):
            async with service.client(ip) as client:
                assert (await client.post("/v1/messages", json=form())).status_code == 202
        async with replica.client(ip) as client:
            assert (await client.post("/v1/messages", json=form())).status_code == 429
    async with started(world) as restarted, restarted.client(ip) as client:
        response = await client.post("/v1/messages", json=form())
        assert response.status_code == 429
        assert int(response.headers["Retry-After"]) >= 1


async def test_the_global_limit_applies_to_everyone_together(world: World) -> None:
    await clear_of_window_edges(Settings.model_fields["contact_rate_client_window_seconds"].default, 7200, 7300)
    # Its own window length gives this app its own global counter in the shared database.
    async with started(world, contact_rate_global=3, contact_rate_global_window_seconds=7200) as service:
        statuses = []
        for _ in range(4):
            async with service.client() as client:
                response = await client.post("/v1/messages", json=form())
                statuses.append(response.status_code)
        assert statuses == [202, 202, 202, 429]
        assert 1 <= int(response.headers["Retry-After"]) <= 7200


async def test_attempts_arriving_together_are_counted_one_by_one(world: World) -> None:
    await clear_of_window_edges(Settings.model_fields["contact_rate_client_window_seconds"].default, 7200, 7300)
    # Sent at once, the attempts are admitted together, by one statement; each must still be counted as if
    # it had come alone, and those refused for their client must not count against everyone's limit.
    async with started(world, contact_rate_global=6, contact_rate_global_window_seconds=7300) as service:
        async with service.client(random_ip()) as one_client:
            burst = await asyncio.gather(*(one_client.post("/v1/messages", json=form()) for _ in range(8)))
        assert sorted(r.status_code for r in burst) == [202] * 5 + [429] * 3

        async def from_elsewhere() -> int:
            async with service.client() as client:
                return (await client.post("/v1/messages", json=form())).status_code

        assert sorted(await asyncio.gather(*(from_elsewhere() for _ in range(3)))) == [202, 429, 429]


async def test_behind_a_trusted_proxy_each_client_has_its_own_limit(world: World) -> None:
    await clear_of_window_edges(Settings.model_fields["contact_rate_client_window_seconds"].default, 7200, 7300)
    # Every request comes from the proxy: keyed on the TCP peer, the whole site would share one bucket.
    proxy, one, two = random_ip(), random_ip(), random_ip()
    async with started(world, trusted_proxies=f"{proxy}/32") as service, service.client(proxy) as client:

        async def send(forwarded_for: str) -> int:
            headers = {"X-Forwarded-For": forwarded_for}
            return (await client.post("/v1/messages", json=form(), headers=headers)).status_code

        assert [await send(one) for _ in range(6)] == [202] * 5 + [429]
        # The client may write anything left of what the proxy appended; only the proxy's own hop counts.
        assert await send(f"{two}, {one}") == 429
        assert await send(f"{one}, {two}") == 202


async def test_an_untrusted_peers_forwarded_for_is_ignored(contact: Contact) -> None:
    async with contact.client(random_ip()) as client:
        statuses = [
            (await client.post("/v1/messages", json=form(), headers={"X-Forwarded-For": random_ip()})).status_code
            for _ in range(6)
        ]
    assert statuses == [202] * 5 + [429]


async def test_two_ipv6_addresses_of_one_64_share_a_limit(contact: Contact) -> None:
    await clear_of_window_edges(Settings.model_fields["contact_rate_client_window_seconds"].default, 7200, 7300)
    prefix = f"2001:db8:{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}"
    statuses = []
    for host in range(1, 7):
        async with contact.client(f"{prefix}::{host:x}") as client:
            statuses.append((await client.post("/v1/messages", json=form())).status_code)
    assert statuses == [202] * 5 + [429]
    async with contact.client(f"2001:db8:{uuid.uuid4().hex[:4]}::1") as elsewhere:
        assert (await elsewhere.post("/v1/messages", json=form())).status_code == 202


async def test_card_numbers_in_a_message_are_masked_before_it_is_stored(contact: Contact, world: World) -> None:
    """A visitor who writes a card number into the form: stored, shown to operators and acknowledged with
    only its last four digits, whatever separators or digits it was written with."""
    address = new_address()
    body = (
        "Please charge 4111 1111 1111 1111 for the licence.\n"
        "Or this one:\n4242\n4242\n4242\n4242\n"
        "or 5555 - 5555 - 5555 - 4444, or ３７８２ ８２２４６３ １０００５, or 4012\u2009 8888\u202f8888\u20091881.\n"
        "My phone is +84 912 345 678, order FS-2026-000123."
    )
    async with contact.client() as client:
        response = await client.post(
            "/v1/messages", json=form(email=address, subject="charge 4111-1111-1111-1111 please", message=body)
        )
    assert response.status_code == 202, response.text
    message_id = response.json()["id"]

    async with contact.operator as operator:
        shown = (await operator.get(f"/v1/messages/{message_id}")).json()
    [row] = await stored(world, address)
    acks = [e.data for e in await outbox_events(world, "notification.requested") if str(message_id) in str(e.data)]
    for text in (shown["subject"], shown["body"], row["subject"], row["body"], str(acks)):
        digits = "".join(str(unicodedata.decimal(ch)) for ch in text if unicodedata.decimal(ch, None) is not None)
        for pan in ("4111111111111111", "4242424242424242", "5555555555554444", "378282246310005", "4012888888881881"):
            assert pan not in digits and pan[:-4] not in digits, text
    assert shown["subject"] == row["subject"] == "charge ****-****-****-1111 please"
    assert "Please charge **** **** **** 1111 for" in row["body"]
    assert "****\n****\n****\n4242" in row["body"]
    assert "**** - **** - **** - 4444" in row["body"]
    assert "**** ****** *０００５" in row["body"]
    assert "+84 912 345 678, order FS-2026-000123." in row["body"]  # not card numbers: kept
