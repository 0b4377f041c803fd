"""The operators' purchaser page (the console calls it): one purchaser's consent to news and unsubscribes, as
this service keeps them, and resending their license keys by e-mail.

Found by address only, like the order look-up: nothing lists purchasers. The unsubscribe state is this
service's own, kept from the notifier's `notification.unsubscribed` events (the same state the fan-outs obey),
so the page shows what the next upgrade or news fan-out will do. A resend is the license-recovery e-mail,
through the outbox as a `notification.requested` to the notifier, with the operator (`X-SPM-Operator`)
recorded in `key_resends`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from spm_common import ratelimit
from spm_common.http import BAD_BODY, OPERATOR_ONLY, Operator, RuntimeDep
from spm_common.logging import get_logger

from orders import recovery, store
from orders.events import Email, normalise_email
from orders.releases import OperatorName
from orders.settings import Settings

log = get_logger(__name__)
router = APIRouter(prefix="/v1", tags=["purchasers (operators)"], responses=OPERATOR_ONLY)
CONSENTS_LISTED = 20
RESENDS_LISTED = 10
NO_PURCHASER: dict[int | str, dict[str, Any]] = {404: {"description": "no purchaser with this address"}}


class NewsConsent(BaseModel):
    """Whether news may be sent to the purchaser now, from the consents their orders gave."""

    state: Literal["given", "withdrawn", "never"] = Field(
        description="given: a consent is in force; withdrawn: every consent was withdrawn (by unsubscribing or "
        "an erasure); never: no order gave one"
    )
    given_at: datetime | None = Field(description="when the newest consent was given (its order's time)")
    policy_version: int | None = Field(description="the privacy-policy version the newest consent was given under")
    order_id: str | None = Field(description="the shop's id of the order that gave the newest consent")
    withdrawn_at: datetime | None = Field(description="when the newest consent was withdrawn, if it was")


class Consent(BaseModel):
    order_id: str = Field(description="the order's id at the shop")
    policy_version: int
    given_at: datetime
    withdrawn_at: datetime | None


class KeyResend(BaseModel):
    request_id: uuid.UUID
    requested_by: str = Field(description="the operator named in X-SPM-Operator")
    license_keys: int = Field(description="how many keys the e-mail held")
    requested_at: datetime


class PurchaserDetail(BaseModel):
    email: str
    name: str
    locale: Literal["vi", "en"]
    first_recorded_at: datetime
    last_order_at: datetime
    orders: int
    license_keys: int
    news_consent: NewsConsent
    news_unsubscribed_at: datetime | None = Field(description="when the purchaser unsubscribed from news")
    upgrades_unsubscribed_at: datetime | None = Field(
        description="when the purchaser unsubscribed from upgrade notices"
    )
    consents: list[Consent] = Field(description=f"consents to news, newest first (at most {CONSENTS_LISTED})")
    key_resends: list[KeyResend] = Field(
        description=f"license keys resent by operators, newest first (at most {RESENDS_LISTED})"
    )


class ResendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email
    request_id: uuid.UUID = Field(
        description="chosen by the caller, one per intended e-mail: the same id again sends nothing more"
    )


class KeysResent(KeyResend):
    duplicate: bool = Field(description="true when this request id was sent before: no second e-mail")


def _settings(runtime: Any) -> Settings:
    settings = runtime.settings
    assert isinstance(settings, Settings)
    return settings


def _address(email: str) -> str:
    try:
        return normalise_email(email)
    except ValueError:
        # Shaped as the documented 422 (each bad parameter named), never echoing the address.
        raise RequestValidationError(
            [{"loc": ("query", "email"), "msg": "not a valid e-mail address", "type": "value_error"}]
        ) from None


def news_consent(consents: list[store.ConsentRow]) -> NewsConsent:
    """The newest consent in force, else the newest withdrawn one, else none."""
    in_force = [c for c in consents if c.withdrawn_at is None]
    shown = in_force[0] if in_force else consents[0] if consents else None
    if shown is None:
        return NewsConsent(state="never", given_at=None, policy_version=None, order_id=None, withdrawn_at=None)
    return NewsConsent(
        state="given" if in_force else "withdrawn",
        given_at=shown.given_at,
        policy_version=shown.policy_version,
        order_id=shown.order_id,
        withdrawn_at=shown.withdrawn_at,
    )


def _resend_view(row: store.KeyResendRow) -> KeyResend:
    return KeyResend(
        request_id=row.request_id,
        requested_by=row.operator,
        license_keys=row.license_keys,
        requested_at=row.requested_at,
    )


@router.get(
    "/purchasers",
    response_model=PurchaserDetail,
    summary="One purchaser's consent to news, unsubscribes and key resends, by address (operator)",
    responses={**NO_PURCHASER, 422: {"description": "not a valid e-mail address"}},
)
async def purchaser(
    _: Operator, runtime: RuntimeDep, email: Annotated[str, Query(min_length=3, max_length=254)]
) -> PurchaserDetail:
    address = _address(email)
    async with runtime.pool.acquire() as conn:
        state = await store.purchaser_state(conn, address)
        if state is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no purchaser with this address")
        # All of them (one per consenting order): the consent in force may be older than the newest few.
        consents = await store.consents_of(conn, state.id)
        resends = await store.key_resends_of(conn, state.id, RESENDS_LISTED)
    return PurchaserDetail(
        email=state.email,
        name=state.name,
        locale="en" if state.locale == "en" else "vi",
        first_recorded_at=state.created_at,
        last_order_at=state.last_order_at,
        orders=state.orders,
        license_keys=state.license_keys,
        news_consent=news_consent(consents),
        news_unsubscribed_at=state.news_unsubscribed_at,
        upgrades_unsubscribed_at=state.upgrades_unsubscribed_at,
        consents=[Consent(**vars(c)) for c in consents[:CONSENTS_LISTED]],
        key_resends=[_resend_view(r) for r in resends],
    )


@router.post(
    "/purchasers/license-keys/resend",
    response_model=KeysResent,
    status_code=status.HTTP_202_ACCEPTED,
    summary="E-mail a purchaser every license key and download link they own, again (operator)",
    description="The license-recovery e-mail, to the purchaser's own address only, through the outbox. The "
    "operator named in `X-SPM-Operator` is recorded. The same `request_id` again answers the first "
    "request's record with `duplicate: true` and sends nothing.",
    responses={
        **BAD_BODY,
        **NO_PURCHASER,
        409: {"description": "the purchaser has no license key, or request_id was used for another purchaser"},
        422: {"description": "invalid address or request id, or no X-SPM-Operator"},
        429: {
            "description": "the purchaser's keys were resent as often as the window allows, or too many wrong"
            " operator tokens came from this client; see Retry-After"
        },
    },
)
async def resend_keys(_: Operator, runtime: RuntimeDep, request: ResendRequest, operator: OperatorName) -> KeysResent:
    settings = _settings(runtime)
    limit = ratelimit.Limit(settings.orders_key_resends_per_purchaser, settings.orders_recovery_window_seconds)
    try:
        async with runtime.pool.acquire() as conn, conn.transaction():
            resent = await recovery.resend(conn, request.email, operator, request.request_id, settings.source, limit)
    except recovery.NoSuchPurchaser:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no purchaser with this address") from None
    except recovery.NoLicenseKeys:
        raise HTTPException(status.HTTP_409_CONFLICT, "this purchaser has no license key") from None
    except recovery.RequestIdTaken:
        raise HTTPException(status.HTTP_409_CONFLICT, "this request_id was used for another purchaser") from None
    except recovery.TooManyResends as exc:
        log.warning("license key resend refused: too many", request_id=str(request.request_id))
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "this purchaser's keys were resent as often as the window allows",
            headers={"Retry-After": str(exc.retry_after)},
        ) from None
    log.info(
        "license keys resent",
        request_id=str(request.request_id),
        license_keys=resent.resend.license_keys,
        duplicate=resent.duplicate,
    )
    return KeysResent(**_resend_view(resent.resend).model_dump(), duplicate=resent.duplicate)
