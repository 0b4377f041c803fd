"""The operators' purchaser page (GET /v1/purchasers?email=) and resending a purchaser's license keys
(POST /v1/purchasers/license-keys/resend): consent and unsubscribes as this service keeps them, the
license-recovery e-mail through the outbox, the operator recorded, a request id sent twice sending once."""

from __future__ import annotations

import uuid
from typing import Any

from orders_helpers import Orders, eventually, fetch, new_address, order_data, outbox

OPERATOR = "lan@spmgroup.vn"


async def bought(orders: Orders, email: str, *, consent: bool = False, placed_at: str = "2026-11-29T03:59:12Z") -> str:
    data = order_data(email, consent=consent, placed_at=placed_at, quantity=2)
    assert (await orders.webhook(data)).status_code == 200
    return str(data["order_id"])


async def unsubscribe(orders: Orders, email: str, category: str) -> None:
    event_id = await orders.publish(
        "notification.unsubscribed", {"email": email, "category": category}, source="urn:spm:notifier"
    )
    await eventually(
        lambda: fetch(orders.world, "SELECT 1 FROM orders.inbox WHERE event_id = $1", event_id), what="consumed"
    )


async def purchaser(orders: Orders, email: str) -> dict[str, Any]:
    async with orders.client(operator=True) as client:
        response = await client.get("/v1/purchasers", params={"email": email})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def resend(orders: Orders, email: str, request_id: uuid.UUID, operator: str | None = OPERATOR) -> Any:
    headers = {"X-SPM-Operator": operator} if operator is not None else {}
    async with orders.client(operator=True) as client:
        return await client.post(
            "/v1/purchasers/license-keys/resend",
            json={"email": email, "request_id": str(request_id)},
            headers=headers,
        )


async def resends(orders: Orders, email: str) -> list[dict[str, Any]]:
    requested = await outbox(orders.world, "notification.requested", email)
    return [e for e in requested if str(e["data"].get("reference", "")).startswith("license-resend:")]


async def test_consent_given_then_withdrawn_by_unsubscribing(orders: Orders) -> None:
    email = new_address("consent")
    order_id = await bought(orders, email, consent=True, placed_at="2026-10-01T08:00:00Z")
    seen = await purchaser(orders, email.upper())
    assert seen["email"] == email and seen["orders"] == 1 and seen["license_keys"] == 2
    assert seen["news_consent"] == {
        "state": "given",
        "given_at": "2026-10-01T08:00:00Z",
        "policy_version": orders.settings.orders_policy_version,
        "order_id": order_id,
        "withdrawn_at": None,
    }
    assert seen["news_unsubscribed_at"] is None and seen["upgrades_unsubscribed_at"] is None

    await unsubscribe(orders, email, "news")
    await unsubscribe(orders, email, "upgrades")
    left = await purchaser(orders, email)
    assert left["news_consent"]["state"] == "withdrawn" and left["news_consent"]["order_id"] == order_id
    assert left["news_consent"]["withdrawn_at"] is not None
    assert left["news_unsubscribed_at"] is not None and left["upgrades_unsubscribed_at"] is not None
    assert [c["withdrawn_at"] is not None for c in left["consents"]] == [True]


async def test_a_purchaser_who_never_consented(orders: Orders) -> None:
    email = new_address("never")
    await bought(orders, email)
    seen = await purchaser(orders, email)
    assert seen["news_consent"]["state"] == "never" and seen["consents"] == []


async def test_look_up_refusals(orders: Orders) -> None:
    async with orders.client(operator=True) as client:
        assert (await client.get("/v1/purchasers", params={"email": new_address()})).status_code == 404
        bad = await client.get("/v1/purchasers", params={"email": "not an address"})
        assert bad.status_code == 422 and "not an address" not in bad.text
    async with orders.client() as anonymous:
        assert (await anonymous.get("/v1/purchasers", params={"email": new_address()})).status_code == 401


async def test_keys_are_resent_once_per_request_with_the_operator_recorded(orders: Orders) -> None:
    email = new_address("resend")
    await bought(orders, email)
    keys = await fetch(
        orders.world,
        "SELECT k.license_key FROM orders.license_keys k JOIN orders.purchasers p ON p.id = k.purchaser_id"
        " WHERE p.email = $1",
        email,
    )
    request_id = uuid.uuid4()
    first = await resend(orders, email.upper(), request_id)
    assert first.status_code == 202, first.text
    assert first.json()["duplicate"] is False and first.json()["license_keys"] == 2
    assert first.json()["requested_by"] == OPERATOR

    again = await resend(orders, email, request_id)  # the form sent twice
    assert again.status_code == 202 and again.json()["duplicate"] is True
    assert again.json()["requested_at"] == first.json()["requested_at"]

    [mail] = await resends(orders, email)
    note = mail["data"]
    assert note["purpose"] == "license-recovery" and note["template"] == "license-recovery"
    assert note["recipient"]["email"] == email and note["reference"] == f"license-resend:{request_id}"
    assert sorted(k for p in note["context"]["products"] for k in p["license_keys"]) == sorted(
        row["license_key"] for row in keys
    )
    [recorded] = await fetch(
        orders.world, "SELECT operator, event_id FROM orders.key_resends WHERE request_id = $1", request_id
    )
    assert recorded["operator"] == OPERATOR and recorded["event_id"] == mail["id"]

    # Another request is another e-mail; the purchaser page lists both, newest first.
    second_id = uuid.uuid4()
    assert (await resend(orders, email, second_id, "minh@spmgroup.vn")).status_code == 202
    assert len(await resends(orders, email)) == 2
    seen = await purchaser(orders, email)
    assert [(r["request_id"], r["requested_by"]) for r in seen["key_resends"]] == [
        (str(second_id), "minh@spmgroup.vn"),
        (str(request_id), OPERATOR),
    ]


async def test_resend_refusals_send_nothing(orders: Orders) -> None:
    email, other = new_address("refused"), new_address("other")
    await bought(orders, email)
    await bought(orders, other)
    assert (await resend(orders, email, uuid.uuid4(), operator=None)).status_code == 422
    assert (await resend(orders, new_address("stranger"), uuid.uuid4())).status_code == 404
    bad = await resend(orders, "not an address", uuid.uuid4())
    assert bad.status_code == 422 and "not an address" not in bad.text
    used = uuid.uuid4()
    assert (await resend(orders, other, used)).status_code == 202
    assert (await resend(orders, email, used)).status_code == 409  # that id was another purchaser's
    async with orders.client() as anonymous:
        response = await anonymous.post(
            "/v1/purchasers/license-keys/resend",
            json={"email": email, "request_id": str(uuid.uuid4())},
            headers={"X-SPM-Operator": OPERATOR},
        )
    assert response.status_code == 401
    assert await resends(orders, email) == []
    assert len(await resends(orders, other)) == 1


async def test_an_operator_cannot_fill_a_purchasers_mailbox_with_their_keys(orders: Orders) -> None:
    """Three resends of one purchaser's keys in the recovery window (the default); the fourth is refused with
    Retry-After, sends nothing and records nothing. A form sent twice is one resend; another purchaser is not
    held back."""
    email, other = new_address("flooded"), new_address("neighbour")
    await bought(orders, email)
    await bought(orders, other)
    first = uuid.uuid4()
    assert (await resend(orders, email, first)).status_code == 202
    assert (await resend(orders, email, first)).json()["duplicate"] is True  # a double click: not counted
    for _ in range(2):
        assert (await resend(orders, email, uuid.uuid4())).status_code == 202
    refused_id = uuid.uuid4()
    refused = await resend(orders, email, refused_id)
    assert refused.status_code == 429, refused.text
    assert 3500 <= int(refused.headers["Retry-After"]) <= 3600
    assert email not in refused.text
    assert len(await resends(orders, email)) == 3
    assert await fetch(orders.world, "SELECT 1 FROM orders.key_resends WHERE request_id = $1", refused_id) == []
    assert (await resend(orders, other, uuid.uuid4())).status_code == 202
