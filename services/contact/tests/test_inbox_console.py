"""What the console needs of the inbox: a search that ignores Vietnamese diacritics (with its index), the
open/closed views, reopening, and which operator replied and closed (X-SPM-Operator)."""

from __future__ import annotations

import uuid
from typing import Any

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
            "EXPLAIN SELECT id FROM messages WHERE to_tsvector('simple'::regconfig,"
            " search_document(name, email, subject, body)) @@ phraseto_tsquery('simple'::regconfig, fold('khoa'))"
        )
    finally:
        await conn.close()
    assert "messages_search" in "\n".join(row[0] for row in rows)


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
