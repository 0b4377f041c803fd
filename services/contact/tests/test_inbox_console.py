"""What the console needs of the inbox: a search that ignores Vietnamese diacritics (with its index), the
open/closed views, reopening, and which operator replied and closed (X-SPM-Operator)."""

from __future__ import annotations

import uuid
from typing import Any

from contact.store import SEARCH_WINDOW
from contact_helpers import Contact, form, outbox_events
from spm_common.testing.world import World


async def post(contact: Contact, **fields: Any) -> str:
    async with contact.client() as client:
        response = await client.post("/v1/messages", json=form(**fields))
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def test_search_ignores_case_and_vietnamese_diacritics(contact: Contact) -> None:
    tag = uuid.uuid4().hex[:8]
    by_name = await post(contact, name=f"Nguyễn Thị Đào {tag}", subject="Xin chào", message="Câu hỏi")
    by_body = await post(contact, subject=f"Bản quyền {tag}", message="Tôi bị mất KHÓA bản quyền phần mềm")
    async with contact.operator as operator:

        async def found(q: str) -> set[str]:
            response = await operator.get("/v1/messages", params={"q": q})
            assert response.status_code == 200, response.text
            return {item["id"] for item in response.json()["items"]}

        assert await found(f"nguyen thi dao {tag}") == {by_name}
        assert await found(f"NGUYỄN THỊ ĐÀO {tag}") == {by_name}
        assert by_body in await found("mat khoa ban quyen")
        assert await found(f"ban quyen {tag}") == {by_body}
        assert await found(f"ban quyen {tag} khong co") == set()


async def test_search_is_served_by_an_index(contact: Contact, world: World) -> None:
    conn = await world.admin()
    try:
        await conn.execute("SET search_path TO contact")
        await conn.execute("SET enable_seqscan TO off")
        rows = await conn.fetch(
            "EXPLAIN SELECT id FROM messages WHERE search_words @@ phraseto_tsquery('simple'::regconfig, fold('khoa'))"
        )
    finally:
        await conn.close()
    assert "messages_search" in "\n".join(row[0] for row in rows)


async def test_a_phrase_is_rechecked_on_the_stored_words(contact: Contact, world: World) -> None:
    """A phrase's candidates are rechecked for the order of its words: on the words each message keeps, not
    by folding and splitting its text again (that made a frequent phrase take ~0.4 s among 100,000 messages,
    bench.console). The words follow a change of the text, as an erasure makes."""
    tag = uuid.uuid4().hex[:8]
    message_id = await post(contact, subject=f"Hóa đơn {tag}", message="Xin xuất hóa đơn với mã số thuế")
    conn = await world.admin()
    try:
        await conn.execute("SET search_path TO contact")
        await conn.execute("SET enable_seqscan TO off")
        await conn.execute("SET enable_indexscan TO off")  # the bitmap path, whose heap scan rechecks
        plan = "\n".join(
            row[0]
            for row in await conn.fetch(
                "EXPLAIN SELECT id FROM messages"
                " WHERE search_words @@ phraseto_tsquery('simple'::regconfig, fold('mã số thuế'))"
            )
        )
        assert "Recheck Cond" in plan and "search_document" not in plan and "to_tsvector" not in plan
        await conn.execute("UPDATE messages SET body = 'đã xoá' WHERE id = $1", uuid.UUID(message_id))
        words = await conn.fetchval("SELECT search_words::text FROM messages WHERE id = $1", uuid.UUID(message_id))
    finally:
        await conn.close()
    assert "'thue'" not in words and "'xoa'" in words
    async with contact.operator as operator:
        response = await operator.get("/v1/messages", params={"q": f"hoa don {tag}", "state": "open"})
        assert [item["id"] for item in response.json()["items"]] == [message_id]
        response = await operator.get("/v1/messages", params={"q": f"{tag} ma so thue"})
        assert response.json()["items"] == []


async def test_open_and_closed_views_reopen_and_who_acted(contact: Contact, world: World) -> None:
    tag = uuid.uuid4().hex[:8]
    message_id = await post(contact, subject=f"Mở đóng {tag}")
    acting = {"X-SPM-Operator": "lan@spmgroup.vn"}
    async with contact.operator as operator:

        async def ids(state: str) -> list[str]:
            response = await operator.get("/v1/messages", params={"q": tag, "state": state})
            return [item["id"] for item in response.json()["items"]]

        assert await ids("open") == [message_id] and await ids("closed") == []
        reply = await operator.post(f"/v1/messages/{message_id}/replies", json={"body": "Chào bạn"}, headers=acting)
        assert reply.status_code == 202
        closed = await operator.post(f"/v1/messages/{message_id}/close", headers=acting)
        assert closed.json()["status"] == "closed" and closed.json()["closed_by"] == "lan@spmgroup.vn"
        assert await ids("open") == [] and await ids("closed") == [message_id]

        reopened = await operator.post(f"/v1/messages/{message_id}/reopen", headers=acting)
        assert reopened.status_code == 200
        detail = reopened.json()
        assert detail["status"] == "answered" and detail["closed_at"] is None and detail["closed_by"] is None
        assert detail["replies"][0]["replied_by"] == "lan@spmgroup.vn"
        assert await ids("open") == [message_id]
        # Reopening an open message changes nothing; an unknown one is 404.
        assert (await operator.post(f"/v1/messages/{message_id}/reopen")).json()["status"] == "answered"
        assert (await operator.post(f"/v1/messages/{uuid.uuid4()}/reopen")).status_code == 404
        assert (await operator.get("/v1/messages", params={"state": "spam"})).status_code == 422
    events = await outbox_events(world, "contact.message.reopened")
    assert [e.data["message_id"] for e in events].count(message_id) == 1


async def test_a_search_finds_matches_beyond_the_newest_window(contact: Contact, world: World) -> None:
    """A search looks among the newest messages first and, finding too few there, asks the index for all: a
    message older than the window is found, and a frequent word's page is the newest matches, in order. (Ten
    years back, so no other test's first page sees them.)"""
    tag = uuid.uuid4().hex[:8]
    conn = await world.admin()
    try:
        insert = (
            "INSERT INTO contact.messages (id, name, email, email_key, subject, body, locale, ack_message_id,"
            " received_at) SELECT gen_random_uuid(), 'Người Gửi', 'gui@example.com', 'gui@example.com', $1,"
            " 'Tin nhắn', 'vi', 'ack',"
            " now() - interval '10 years' + make_interval(secs => n) FROM generate_series($2::int, $3::int) AS n"
            " RETURNING id"
        )
        [old] = [row["id"] for row in await conn.fetch(insert, f"Cũ {tag}", 0, 0)]
        await conn.execute(insert, f"Mới {tag}", 1, SEARCH_WINDOW + 50)
    finally:
        await conn.close()
    async with contact.operator as operator:
        found = await operator.get("/v1/messages", params={"q": f"cu {tag}", "state": "open"})
        assert [item["id"] for item in found.json()["items"]] == [str(old)]
        page = (await operator.get("/v1/messages", params={"q": f"moi {tag}", "limit": 5})).json()["items"]
        times = [item["received_at"] for item in page]
        assert len(page) == 5 and times == sorted(times, reverse=True)
        last = (await operator.get("/v1/messages", params={"q": f"moi {tag}", "limit": 200})).json()["items"]
        assert last[:5] == page
