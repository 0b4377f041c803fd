"""HTTP routes of the orders service: the shop's signed webhook, license recovery, the operators' look-up.

There is no route that lists purchasers: an operator finds one person's orders by that person's address.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Header, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from spm_common.clientaddr import of_request, rate_limit_key
from spm_common.consumer import PermanentError
from spm_common.http import BAD_BODY, OPERATOR_ONLY, Operator, RuntimeDep, json_body
from spm_common.runtime import Runtime

from orders import licenses, recovery, store, webhooks
from orders.events import Email, InvalidEvent, OrderPlaced, normalise_email
from orders.orders import Incoming, config_of, place_orders
from orders.settings import Settings

router = APIRouter(prefix="/v1")
MAX_ORDERS_LISTED = 100
RECOVERY_ANSWER = "If this address bought from us, its license keys and download links are on their way to it."


class WebhookResult(BaseModel):
    id: str
    status: Literal["recorded", "duplicate"]


class RecoveryRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    email: Email


class RecoveryAccepted(BaseModel):
    status: Literal["accepted"] = "accepted"
    detail: str = RECOVERY_ANSWER


class ItemView(BaseModel):
    line: int
    sku: str
    product_name: str
    quantity: int
    unit_price: Decimal


class KeyView(BaseModel):
    sku: str
    major_version: int
    hint: str


class RevealedKey(BaseModel):
    sku: str
    major_version: int
    license_key: str


class PurchaserView(BaseModel):
    # Empty once the purchaser's data was erased at their request (the order itself is kept by law).
    email: str | None
    name: str | None
    phone: str | None
    address: dict[str, Any] | None  # as stored: the JSON of the order's address, answered as it is


class OrderView(BaseModel):
    id: uuid.UUID
    source: str
    order_id: str
    placed_at: datetime
    currency: str
    total: Decimal
    locale: str
    marketing_consent: bool
    privacy_policy_version: int
    via: str
    card_data_removed: bool
    recorded_at: datetime
    purchaser: PurchaserView
    items: list[ItemView]
    license_keys: list[KeyView]


def _settings(runtime: Runtime) -> Settings:
    settings = runtime.settings
    assert isinstance(settings, Settings)
    return settings


@router.post(
    "/webhooks/orders",
    tags=["orders"],
    response_model=WebhookResult,
    summary="An order completed at the e-commerce service (the order.placed data, signed)",
    description='Header `X-SPM-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">` (several '
    "v1 values accepted while the secret is rotated; 5 minutes of tolerance). Same result as the order.placed "
    "event: a duplicate (same order id) changes nothing and answers `duplicate`.",
    responses={
        **BAD_BODY,
        401: {"description": "missing, wrong or stale signature"},
        422: {"description": "invalid order"},
    },
    # Read by the route itself (the signature covers the raw bytes), so described here for clients and fuzzers.
    openapi_extra={"requestBody": json_body(OrderPlaced)},
)
async def order_webhook(
    request: Request,
    runtime: RuntimeDep,
    x_spm_signature: Annotated[str | None, Header()] = None,
) -> WebhookResult | JSONResponse:
    settings = _settings(runtime)
    body = await request.body()  # the signature covers the raw bytes, so they are read before any parsing
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
    if not webhooks.verify(secret, x_spm_signature, body, time.time(), settings.orders_webhook_tolerance_seconds):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing, invalid or expired signature")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "the body is not JSON") from None
    incoming = Incoming(settings.orders_webhook_source, data, "webhook")
    try:
        async with runtime.pool.acquire() as conn, conn.transaction():
            [result] = await place_orders(conn, [incoming], config_of(settings))
    except InvalidEvent as exc:
        return JSONResponse({"detail": exc.errors}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)
    except PermanentError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    return WebhookResult(id=str(result.id), status="duplicate" if result.duplicate else "recorded")


@router.post(
    "/license-recovery",
    tags=["purchasers"],
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RecoveryAccepted,
    summary="E-mail every license key and download link an address owns to that address",
    description="Always the same 202 answer, in about the same time, whether or not the address bought anything.",
    responses={**BAD_BODY, 429: {"description": "too many requests from this client; see Retry-After"}},
)
async def license_recovery(
    request: Request, form: RecoveryRequest, runtime: RuntimeDep
) -> RecoveryAccepted | JSONResponse:
    settings = _settings(runtime)
    client = rate_limit_key(of_request(request, settings.trusted_proxies))
    limited = await recovery.recover(runtime.pool, settings, form.email, client)
    if limited is not None:
        return JSONResponse(
            {"detail": "too many requests; try again later"},
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            headers={"Retry-After": str(limited.retry_after)},
        )
    return RecoveryAccepted()


@router.get(
    "/orders",
    tags=["operators"],
    response_model=list[OrderView],
    summary="One purchaser's orders, or the orders with one id at the shop, newest first (operator)",
    responses=OPERATOR_ONLY,
)
async def orders_by_email(
    _: Operator,
    runtime: RuntimeDep,
    email: Annotated[str | None, Query(min_length=3, max_length=254)] = None,
    order_id: Annotated[
        str | None, Query(min_length=1, max_length=200, description="the order's id at the shop (instead of email)")
    ] = None,
) -> list[OrderView]:
    if (email is None) == (order_id is None):
        # Shaped as the documented 422 (each bad parameter named).
        raise RequestValidationError(
            [{"loc": ("query", "email"), "msg": "give either email or order_id", "type": "value_error"}]
        )
    async with runtime.pool.acquire() as conn:
        if order_id is not None:
            rows = await store.orders_by_shop_id(conn, order_id.strip(), MAX_ORDERS_LISTED)
        else:
            try:
                address = normalise_email(email or "")
            except ValueError:
                # Shaped as the documented 422 (each bad parameter named), never echoing the address.
                raise RequestValidationError(
                    [{"loc": ("query", "email"), "msg": "not a valid e-mail address", "type": "value_error"}]
                ) from None
            rows = await store.orders_of(conn, address, MAX_ORDERS_LISTED)
        details = [await store.order_detail(conn, row["id"]) for row in rows]
    return [_view(detail) for detail in details if detail is not None]


@router.get(
    "/orders/{order_id}",
    tags=["operators"],
    response_model=OrderView,
    summary="One order (operator)",
    responses={**OPERATOR_ONLY, 404: {"description": "no such order"}},
)
async def order_by_id(_: Operator, runtime: RuntimeDep, order_id: uuid.UUID) -> OrderView:
    async with runtime.pool.acquire() as conn:
        detail = await store.order_detail(conn, order_id)
    if detail is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such order")
    return _view(detail)


@router.get(
    "/orders/{order_id}/license-keys",
    tags=["operators"],
    response_model=list[RevealedKey],
    summary="An order's license keys in full, for an operator who must read one out (operator)",
    description="The console records each such reveal in the audit trail (operator.action) before asking.",
    responses={**OPERATOR_ONLY, 404: {"description": "no such order"}},
)
async def license_keys(_: Operator, runtime: RuntimeDep, order_id: uuid.UUID) -> list[RevealedKey]:
    async with runtime.pool.acquire() as conn:
        keys = await store.license_keys_of(conn, order_id)
    if keys is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such order")
    return [RevealedKey(**dict(key)) for key in keys]


def _view(detail: store.OrderDetail) -> OrderView:
    order = detail["order"]
    address = order["address"]
    return OrderView(
        id=order["id"],
        source=order["source"],
        order_id=order["order_id"],
        placed_at=order["placed_at"],
        currency=order["currency"],
        total=order["total"],
        locale=order["locale"],
        marketing_consent=order["marketing_consent"],
        privacy_policy_version=order["privacy_policy_version"],
        via=order["via"],
        card_data_removed=order["card_data_removed"],
        recorded_at=order["recorded_at"],
        purchaser=PurchaserView(
            email=order["email"],
            name=order["name"],
            phone=order["phone"],
            address=orjson.loads(address) if address else None,
        ),
        items=[ItemView(**dict(item)) for item in detail["items"]],
        # Operators see which keys exist, not the keys: the purchaser recovers them by e-mail.
        license_keys=[
            KeyView(sku=k["sku"], major_version=k["major_version"], hint=licenses.hint(k["license_key"]))
            for k in detail["keys"]
        ],
    )
