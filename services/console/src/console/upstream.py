"""The services' operator APIs as the console calls them: the operator token, and `X-SPM-Operator` naming
the operator who acts. Typed answers, so pages never handle raw JSON."""

from __future__ import annotations

import contextlib
import uuid
from datetime import datetime
from decimal import Decimal

# Loosely typed: httpx's keyword arguments, and JSON answers the caller validates into its model.
from typing import Any, Literal

import httpx
from pydantic import BaseModel

OPERATOR_HEADER = "X-SPM-Operator"


class UpstreamError(Exception):
    """A service did not answer as expected; `status` is its HTTP status (0 where it did not answer)."""

    def __init__(self, status: int, detail: str = "") -> None:
        super().__init__(f"upstream answered {status}")
        self.status = status
        self.detail = detail


class Delivery(BaseModel):
    status: Literal["queued", "sent", "failed"]
    error: str | None = None
    updated_at: datetime | None = None


class MessageSummary(BaseModel):
    id: uuid.UUID
    name: str
    email: str
    subject: str | None
    locale: str
    status: str
    received_at: datetime
    closed_at: datetime | None = None
    acknowledgement: Delivery
    reply_count: int


class Reply(BaseModel):
    id: uuid.UUID
    body: str
    created_at: datetime
    delivery: Delivery
    replied_by: str | None = None


class MessageDetail(MessageSummary):
    body: str
    replies: list[Reply]
    closed_by: str | None = None


class MessagePage(BaseModel):
    items: list[MessageSummary]
    next_cursor: str | None = None


class Api:
    """One service's operator API: its client, and the call every method makes."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def _call(self, method: str, path: str, operator: str, **kwargs: Any) -> Any:
        try:
            response = await self.client.request(method, path, headers={OPERATOR_HEADER: operator}, **kwargs)
        except httpx.HTTPError:
            raise UpstreamError(0) from None
        if response.status_code >= 400:
            detail = ""
            with contextlib.suppress(ValueError):
                body = response.json()
                detail = body.get("detail") if isinstance(body.get("detail"), str) else ""
            raise UpstreamError(response.status_code, detail)
        return response.json()


class Contact(Api):
    """The contact service's inbox API."""

    async def messages(
        self, operator: str, *, state: str, text: str | None, cursor: str | None, limit: int
    ) -> MessagePage:
        params: dict[str, str | int] = {"state": state, "limit": limit}
        if text:
            params["q"] = text
        if cursor:
            params["cursor"] = cursor
        return MessagePage.model_validate(await self._call("GET", "/v1/messages", operator, params=params))

    async def message(self, operator: str, message_id: uuid.UUID) -> MessageDetail:
        return MessageDetail.model_validate(await self._call("GET", f"/v1/messages/{message_id}", operator))

    async def reply(self, operator: str, message_id: uuid.UUID, body: str) -> None:
        await self._call("POST", f"/v1/messages/{message_id}/replies", operator, json={"body": body})

    async def close(self, operator: str, message_id: uuid.UUID) -> None:
        await self._call("POST", f"/v1/messages/{message_id}/close", operator)

    async def reopen(self, operator: str, message_id: uuid.UUID) -> None:
        await self._call("POST", f"/v1/messages/{message_id}/reopen", operator)


class Item(BaseModel):
    line: int
    sku: str
    product_name: str
    quantity: int
    unit_price: Decimal


class KeyHint(BaseModel):
    sku: str
    major_version: int
    hint: str


class RevealedKey(BaseModel):
    sku: str
    major_version: int
    license_key: str


class Purchaser(BaseModel):
    # Null once the purchaser's data was erased at their request (the order itself is kept by law).
    email: str | None
    name: str | None
    phone: str | None = None
    address: dict[str, Any] | None = None


class Order(BaseModel):
    id: uuid.UUID
    order_id: str
    placed_at: datetime
    currency: str
    total: Decimal
    locale: str
    marketing_consent: bool
    card_data_removed: bool
    purchaser: Purchaser
    items: list[Item]
    license_keys: list[KeyHint]


class NewsConsent(BaseModel):
    state: Literal["given", "withdrawn", "never"]
    given_at: datetime | None = None
    policy_version: int | None = None
    order_id: str | None = None
    withdrawn_at: datetime | None = None


class Consent(BaseModel):
    order_id: str
    policy_version: int
    given_at: datetime
    withdrawn_at: datetime | None = None


class KeyResend(BaseModel):
    request_id: uuid.UUID
    requested_by: str
    license_keys: int
    requested_at: datetime


class KeysResent(KeyResend):
    duplicate: bool


class PurchaserDetail(BaseModel):
    """The purchaser page: consent to news and unsubscribes as the orders service keeps them (the state its
    fan-outs obey), and the operators' key resends."""

    email: str
    name: str
    locale: str
    first_recorded_at: datetime
    last_order_at: datetime
    orders: int
    license_keys: int
    news_consent: NewsConsent
    news_unsubscribed_at: datetime | None = None
    upgrades_unsubscribed_at: datetime | None = None
    consents: list[Consent]
    key_resends: list[KeyResend]


class Orders(Api):
    """The orders service's look-up API."""

    async def search(self, operator: str, *, email: str | None = None, order_id: str | None = None) -> list[Order]:
        params = {"email": email} if email else {"order_id": order_id or ""}
        return [Order.model_validate(o) for o in await self._call("GET", "/v1/orders", operator, params=params)]

    async def order(self, operator: str, order_id: uuid.UUID) -> Order:
        return Order.model_validate(await self._call("GET", f"/v1/orders/{order_id}", operator))

    async def license_keys(self, operator: str, order_id: uuid.UUID) -> list[RevealedKey]:
        keys = await self._call("GET", f"/v1/orders/{order_id}/license-keys", operator)
        return [RevealedKey.model_validate(k) for k in keys]

    async def purchaser(self, operator: str, email: str) -> PurchaserDetail:
        answer = await self._call("GET", "/v1/purchasers", operator, params={"email": email})
        return PurchaserDetail.model_validate(answer)

    async def resend_keys(self, operator: str, email: str, request_id: uuid.UUID) -> KeysResent:
        body = {"email": email, "request_id": str(request_id)}
        answer = await self._call("POST", "/v1/purchasers/license-keys/resend", operator, json=body)
        return KeysResent.model_validate(answer)


def client(base_url: str, token: str | None, timeout: float) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout)
