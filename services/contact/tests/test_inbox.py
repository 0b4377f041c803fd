"""The operators' inbox: token, listing, one message, closing, replying, and the notifier's reports."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from contact_helpers import Contact, eventually, form, new_address, outbox_events, publish
from spm_common.envelope import new_event
from spm_common.notifications import NotificationOutcome
from spm_common.testing.world import World


async def post(contact: Contact, **fields: Any) -> str:
    async with contact.client() as client:
        response = await client.post("/v1/messages", json=form(**fields))
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/messages"),
        ("GET", f"/v1/messages/{uuid.uuid4()}"),
        ("POST", f"/v1/messages/{uuid.uuid4()}/close"),
        ("POST", f"/v1/messages/{uuid.uuid4()}/replies"),
    ],
)
async def test_operator_routes_need_the_token(contact: Contact, method: str, path: str) -> None:
    async with contact.client() as client:
        assert (await client.request(method, path, json={"body": "x"})).status_code == 401
        response = await client.request(method, path, json={"body": "x"}, headers={"Authorization": "Bearer wrong"})
        assert response.status_code == 401
        assert response.json() == {"detail": "a valid operator token is required"}


async def test_list_is_newest_first_paged_and_filtered(contact: Contact) -> None:
    tag = uuid.uuid4().hex[:8]
    ids = [await post(contact, subject=f"Đơn hàng {tag} số {i}") for i in range(5)]
    closed = await post(contact, subject=f"Đã xong {tag}")
    other = await post(contact, message=f"100% {tag} _literal_")
    async with contact.operator as operator:
        assert (await operator.post(f"/v1/messages/{closed}/close")).status_code == 200

        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"q": f"Đơn hàng {tag}", "limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = (await operator.get("/v1/messages", params=params)).json()
            assert len(page["items"]) <= 2
            seen += [item["id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == list(reversed(ids))

        page = (await operator.get("/v1/messages", params={"q": tag, "status": "closed"})).json()
        assert [item["id"] for item in page["items"]] == [closed]
        assert page["items"][0]["status"] == "closed" and page["items"][0]["closed_at"]
        page = (await operator.get("/v1/messages", params={"q": tag, "status": "new"})).json()
        assert closed not in [item["id"] for item in page["items"]] and len(page["items"]) == 6

        # The search is by words: % and _ are punctuation, never patterns that match everything.
        page = (await operator.get("/v1/messages", params={"q": f"100% {tag} _literal_"})).json()
        assert [item["id"] for item in page["items"]] == [other]
        assert (await operator.get("/v1/messages", params={"q": "%"})).json()["items"] == []
        assert (await operator.get("/v1/messages", params={"q": "_"})).json()["items"] == []

        assert (await operator.get("/v1/messages", params={"status": "spam"})).status_code == 422
        assert (await operator.get("/v1/messages", params={"limit": 0})).status_code == 422
        response = await operator.get("/v1/messages", params={"cursor": "bm90IGEgY3Vyc29y"})
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["query", "cursor"]


async def test_one_message_with_everything_an_operator_needs(contact: Contact) -> None:
    address = new_address()
    message_id = await post(contact, email=address, subject="Mất mã kích hoạt", message="Tôi bị mất mã.")
    async with contact.operator as operator:
        detail = (await operator.get(f"/v1/messages/{message_id}")).json()
        assert detail["email"] == address
        assert detail["subject"] == "Mất mã kích hoạt"
        assert detail["body"] == "Tôi bị mất mã."
        assert detail["status"] == "new"
        assert detail["acknowledgement"]["status"] == "queued"
        assert detail["privacy_policy_version"] >= 1
        assert detail["replies"] == [] and detail["reply_count"] == 0

        missing = await operator.get(f"/v1/messages/{uuid.uuid4()}")
        assert missing.status_code == 404 and missing.json() == {"detail": "message not found"}
        assert (await operator.get("/v1/messages/not-a-uuid")).status_code == 422


async def test_a_reply_is_stored_and_requested_in_the_thread_of_the_acknowledgement(
    contact: Contact, world: World
) -> None:
    address = new_address()
    message_id = await post(contact, email=address, subject="Hỏi về bản nâng cấp", locale="vi")
    async with contact.operator as operator:
        response = await operator.post(f"/v1/messages/{message_id}/replies", json={"body": "  Chào bạn,\r\nĐã gửi.  "})
        assert response.status_code == 202, response.text
        reply = response.json()
        assert reply["message_id"] == message_id and reply["delivery"]["status"] == "queued"

        detail = (await operator.get(f"/v1/messages/{message_id}")).json()
        assert detail["status"] == "answered"
        assert [(r["id"], r["body"], r["delivery"]["status"]) for r in detail["replies"]] == [
            (reply["id"], "Chào bạn,\nĐã gửi.", "queued")
        ]

    [request] = [
        e
        for e in await outbox_events(world, "notification.requested")
        if e.data["reference"] == f"contact.reply:{reply['id']}"
    ]
    assert request.purpose == request.data["purpose"] == "answer-message"
    assert request.data["template"] == "contact-reply"
    assert request.data["locale"] == "vi"
    assert request.data["recipient"]["email"] == address
    assert request.data["context"] == {"subject": "Hỏi về bản nâng cấp", "reply_body": "Chào bạn,\nĐã gửi."}
    assert request.data["in_reply_to"] == f"<contact-{message_id}@spmgroup.vn>"
    assert request.data["message_id"] == f"<contact-reply-{reply['id']}@spmgroup.vn>"
    [replied] = [e for e in await outbox_events(world, "contact.message.replied") if e.data["reply_id"] == reply["id"]]
    assert replied.data["message_id"] == message_id and "body" not in replied.data


async def test_card_numbers_in_a_reply_are_masked_before_it_is_stored_and_sent(contact: Contact, world: World) -> None:
    message_id = await post(contact, email=new_address(), subject="Thanh toán")
    body = "We did not charge 4111 1111 1111 1111; please use 4242\n4242\n4242\n4242. Order FS-2026-000123."
    async with contact.operator as operator:
        response = await operator.post(f"/v1/messages/{message_id}/replies", json={"body": body})
        assert response.status_code == 202, response.text
        reply = response.json()
        detail = (await operator.get(f"/v1/messages/{message_id}")).json()
    masked = "We did not charge **** **** **** 1111; please use ****\n****\n****\n4242. Order FS-2026-000123."
    assert [r["body"] for r in detail["replies"]] == [masked]
    [request] = [
        e
        for e in await outbox_events(world, "notification.requested")
        if e.data["reference"] == f"contact.reply:{reply['id']}"
    ]
    assert request.data["context"]["reply_body"] == masked


async def test_replies_are_validated_and_closed_messages_take_none(contact: Contact, world: World) -> None:
    message_id = await post(contact)
    async with contact.operator as operator:
        for body in ("", "   ", "a\x00b"):
            response = await operator.post(f"/v1/messages/{message_id}/replies", json={"body": body})
            assert response.status_code == 422
            assert response.json()["detail"][0]["loc"] == ["body", "body"]
        missing = await operator.post(f"/v1/messages/{uuid.uuid4()}/replies", json={"body": "Xin chào"})
        assert missing.status_code == 404

        first = await operator.post(f"/v1/messages/{message_id}/close")
        again = await operator.post(f"/v1/messages/{message_id}/close")
        assert first.status_code == again.status_code == 200
        assert first.json()["status"] == "closed" and first.json()["closed_at"] == again.json()["closed_at"]
        response = await operator.post(f"/v1/messages/{message_id}/replies", json={"body": "Xin chào"})
        assert response.status_code == 409 and response.json() == {"detail": "the message is closed"}
        assert (await operator.post(f"/v1/messages/{uuid.uuid4()}/close")).status_code == 404

    closings = [e for e in await outbox_events(world, "contact.message.closed") if e.data["message_id"] == message_id]
    assert len(closings) == 1 and closings[0].purpose == "answer-message"


def outcome(reference: str, status: str, error: str | None = None, purpose: str = "answer-message") -> Any:
    return new_event(
        f"notification.{status}",
        "urn:spm:notifier",
        NotificationOutcome(
            request_event_id=str(uuid.uuid4()),
            reference=reference,
            purpose=purpose,  # type: ignore[arg-type]
            template="contact-reply",
            status=status,  # type: ignore[arg-type]
            error=error,
        ),
        purpose=purpose,  # type: ignore[arg-type]
    )


async def test_the_notifiers_reports_show_as_delivery_status(contact: Contact, world: World) -> None:
    message_id = await post(contact)
    async with contact.operator as operator:
        replies = []
        for text in ("Thứ nhất", "Thứ hai"):
            response = await operator.post(f"/v1/messages/{message_id}/replies", json={"body": text})
            replies.append(response.json()["id"])

        async def deliveries() -> dict[str, Any] | None:
            detail = (await operator.get(f"/v1/messages/{message_id}")).json()
            state = {r["id"]: r["delivery"] for r in detail["replies"]}
            state["ack"] = detail["acknowledgement"]
            done = all(d["status"] != "queued" for d in state.values())
            return state if done else None

        await publish(world, outcome(f"contact.reply:{replies[0]}", "failed", "550 5.1.1 mailbox unavailable"))
        await publish(world, outcome(f"contact.reply:{replies[1]}", "sent"))
        await publish(world, outcome(f"contact.message:{message_id}", "sent"))
        # Other services' mail and unreadable references are none of the inbox's business.
        await publish(world, outcome(f"contact.reply:{replies[1]}", "failed", "late", purpose="fulfil-order"))
        await publish(world, outcome("contact.reply:not-a-uuid", "failed", "x"))
        await publish(world, outcome(f"contact.reply:{uuid.uuid4()}", "sent"))
        state = await eventually(deliveries, what="delivery reports")
        assert state[replies[0]]["status"] == "failed"
        assert state[replies[0]]["error"] == "550 5.1.1 mailbox unavailable"
        assert state[replies[0]]["updated_at"]
        assert state[replies[1]] == {**state[replies[1]], "status": "sent", "error": None}
        assert state["ack"]["status"] == "sent"

        # A late failure report does not hide a delivery that succeeded.
        await publish(world, outcome(f"contact.reply:{replies[1]}", "failed", "late"))
        await publish(world, outcome(f"contact.reply:{replies[0]}", "sent"))
        await eventually(lambda: _status_of(operator, message_id, replies[0], "sent"), what="retry reported")
        detail = (await operator.get(f"/v1/messages/{message_id}")).json()
        assert {r["id"]: r["delivery"]["status"] for r in detail["replies"]} == {replies[0]: "sent", replies[1]: "sent"}


async def _status_of(operator: Any, message_id: str, reply_id: str, status: str) -> bool:
    detail = (await operator.get(f"/v1/messages/{message_id}")).json()
    return any(r["id"] == reply_id and r["delivery"]["status"] == status for r in detail["replies"])


async def test_other_services_mail_outcomes_cost_no_transaction(contact: Contact, world: World) -> None:
    """An outcome of another service's mail that reaches this queue all the same (sent before the notifier
    routed outcomes to their requester, or bound by hand) is not recorded; only the inbox's own are."""
    message_id = await post(contact)
    others = [outcome(f"orders.order:{uuid.uuid4()}", "sent", purpose="fulfil-order") for _ in range(3)]
    for event in others:
        await publish(world, event, routing_key="notification.sent.contact")
    ours = outcome(f"contact.message:{message_id}", "sent")
    await publish(world, ours)

    async def recorded() -> set[str] | None:
        conn = await world.admin()
        try:
            rows = await conn.fetch("SELECT event_id FROM contact.inbox")
        finally:
            await conn.close()
        ids = {r["event_id"] for r in rows}
        return ids if ours.id in ids else None

    ids = await eventually(recorded, what="the inbox's own outcome recorded")
    assert not ids & {event.id for event in others}
