"""Events the orders service consumes and publishes (payloads of the CloudEvents `data`).

Consumed (orders.handlers registers each one's handler): `order.placed`, `upgrade.released`,
`product.announced` (CONTRACT section 3) and `notification.unsubscribed` (from the notifier). Published:
`order.recorded`, `security.card-data-removed` and `notification.requested`, which is the only one that ever
carries a license key.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from decimal import Decimal
from typing import Annotated, ClassVar, Literal, TypedDict, TypeVar

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    HttpUrl,
    ValidationError,
)
from spm_common.addresses import is_plain_address, normalise_address
from spm_common.asyncapi import Example
from spm_common.consumer import PermanentError
from spm_common.envelope import Payload
from spm_common.inputs import BoundedAwareDateTime, DbInt
from spm_common.notifications import NOTIFICATION_REQUESTED, NotificationRequested
from spm_common.privacy import PRIVACY_REQUEST_COMPLETED, PrivacyRequestCompleted
from spm_common.retention import RETENTION_PURGED, RetentionPurged

ORDER_PLACED = "order.placed"
UPGRADE_RELEASED = "upgrade.released"
PRODUCT_ANNOUNCED = "product.announced"
NOTIFICATION_UNSUBSCRIBED = "notification.unsubscribed"
ORDER_RECORDED = "order.recorded"
CARD_DATA_REMOVED = "security.card-data-removed"


M = TypeVar("M", bound=BaseModel)


class FieldError(TypedDict):
    """Where and why a field is invalid, without the input (pydantic's `ErrorDetails` less input and context)."""

    loc: list[str | int]
    msg: str
    type: str


class InvalidEvent(PermanentError):
    """A payload that can never be valid. Its reason says where and why, never what was sent (pydantic's own
    message quotes the input, which may be personal data), so it is fit for logs and dead-letter headers."""

    def __init__(self, model: str, errors: list[FieldError]) -> None:
        self.errors = errors
        reasons = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '$'}: {e['msg']}" for e in errors[:10])
        super().__init__(f"invalid {model}: {reasons}"[:500])


def parse(model: type[M], data: object) -> M:
    """Validate an incoming payload, raising InvalidEvent (dead-lettered at once) if it cannot be valid."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors: list[FieldError] = [
            {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
            for e in exc.errors(include_input=False, include_url=False, include_context=False)
        ]
        raise InvalidEvent(model.__name__, errors) from None


def normalise_email(text: str) -> str:
    """A valid address in the one spelling that identifies a purchaser (`normalise_address`): the orders
    service keeps no other, as nothing shows a purchaser's address as they typed it."""
    plain = normalise_address(text)
    if is_plain_address(plain):
        return plain
    text = unicodedata.normalize("NFC", text).strip()
    if any(ch in text for ch in "\r\n\x00"):
        raise ValueError("not a valid e-mail address")
    try:
        return normalise_address(validate_email(text, check_deliverability=False).normalized)
    except EmailNotValidError as exc:
        raise ValueError("not a valid e-mail address") from exc


_LINE_BREAK = re.compile("[\r\n\x00]")


def _single_line(text: str) -> str:
    text = unicodedata.normalize("NFC", text).strip()
    if _LINE_BREAK.search(text):
        raise ValueError("must be a single line")
    return text


def _money(value: object) -> object:
    """Money is a decimal string (or a whole number); a float has already lost cents, so it is refused."""
    if isinstance(value, float | bool):
        raise ValueError("money must be a decimal string")
    return value


Email = Annotated[str, Field(max_length=254), AfterValidator(normalise_email)]
Line = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_single_line)]
OptionalLine = Annotated[str | None, Field(max_length=200)]
# The constraints come before the validator so pydantic-core checks them itself (after it, each would be a
# Python function call per amount).
Money = Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=2), BeforeValidator(_money)]
Sku = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Z0-9][A-Z0-9._-]*$")]
Url = Annotated[HttpUrl, Field(max_length=2000)]


class Address(BaseModel):
    model_config = ConfigDict(extra="ignore")

    line1: Line
    line2: OptionalLine = None
    city: Line
    region: OptionalLine = None
    postal_code: Annotated[str | None, Field(max_length=20)] = None
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]


class Purchaser(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: Line
    email: Email
    phone: Annotated[str | None, Field(max_length=40)] = None
    address: Address | None = None
    locale: Literal["vi", "en"] = "en"


class Item(BaseModel):
    model_config = ConfigDict(extra="ignore")

    sku: Sku
    product_name: Line
    quantity: Annotated[int, Field(ge=1, le=100)]
    unit_price: Money


class OrderPlaced(Payload):
    """`order.placed`: an order completed at the third-party e-commerce service (also the webhook's body)."""

    model_config = ConfigDict(extra="ignore")
    event_type: ClassVar[str] = ORDER_PLACED

    order_id: Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_single_line)]
    placed_at: BoundedAwareDateTime
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    total: Money
    purchaser: Purchaser
    items: Annotated[list[Item], Field(min_length=1, max_length=50)]
    marketing_consent: bool = False
    # The privacy-policy version the purchaser saw, where the shop knows it; else the one configured.
    privacy_policy_version: Annotated[DbInt | None, Field(ge=1)] = None


class UpgradeReleased(Payload):
    """`upgrade.released`: a new version of a product is out."""

    model_config = ConfigDict(extra="ignore")
    event_type: ClassVar[str] = UPGRADE_RELEASED

    release_id: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:-]+$")]
    sku: Sku
    version: Annotated[str, Field(min_length=1, max_length=40, pattern=r"^\d+(\.[0-9A-Za-z-]+)*$")]
    released_at: AwareDatetime
    title: Line
    notes_url: Url | None = None
    download_url: Url
    eligible_since: AwareDatetime | None = None
    new_registration: bool = False

    @property
    def major(self) -> int:
        return int(self.version.split(".", 1)[0])


class ProductAnnounced(Payload):
    """`product.announced`: news about a new product or service."""

    model_config = ConfigDict(extra="ignore")
    event_type: ClassVar[str] = PRODUCT_ANNOUNCED

    announcement_id: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:-]+$")]
    title: Line
    summary: Annotated[str, Field(min_length=1, max_length=2000)]
    url: Url


class NotificationUnsubscribed(Payload):
    """`notification.unsubscribed` (published by the notifier): a recipient left a category of mail."""

    model_config = ConfigDict(extra="ignore")
    event_type: ClassVar[str] = NOTIFICATION_UNSUBSCRIBED

    email: Email
    category: Literal["upgrades", "news"]


class OrderItemRecorded(BaseModel):
    sku: str
    quantity: int
    unit_price: Decimal


class OrderRecorded(BaseModel):
    """A new order was recorded (duplicates publish nothing). No license key, no card data; the address is
    here only so the audit trail can file the entry under a pseudonym."""

    id: str
    source: str
    order_id: str
    via: Literal["event", "webhook"]
    placed_at: datetime
    currency: str
    total: Decimal
    items: list[OrderItemRecorded]
    email: str
    marketing_consent: bool
    privacy_policy_version: int
    license_keys_issued: int
    card_data_removed: bool


class CardDataRemoved(BaseModel):
    """Card data arrived and was removed before anything was written: which source, which fields, how many
    numbers were masked. Never any digit of a card."""

    source: str
    via: Literal["event", "webhook"]
    order: str | None = None
    fields: list[str]
    masked_numbers: int


PUBLISHES: dict[str, type[BaseModel]] = {
    ORDER_RECORDED: OrderRecorded,
    CARD_DATA_REMOVED: CardDataRemoved,
    NOTIFICATION_REQUESTED: NotificationRequested,
    # The answer to a confirmed privacy request (orders.privacy_answer).
    PRIVACY_REQUEST_COMPLETED: PrivacyRequestCompleted,
    # What its retention jobs removed or anonymised, counts only (spm_common.retention, orders.retention).
    RETENTION_PURGED: RetentionPurged,
}

# Shown in docs/asyncapi/orders.yaml as the shop and the release pipeline publish them; a test publishes each one
# and sees it accepted end to end, so the examples stay true. Test data only (a 4111... card is never needed).
EXAMPLES: dict[str, Example] = {
    ORDER_PLACED: Example(
        source="https://shop.example/orders",
        data={
            "order_id": "FS-2026-EXAMPLE-0001",
            "placed_at": "2026-11-29T03:59:12Z",
            "currency": "USD",
            "total": "49.00",
            "purchaser": {
                "name": "Nguyễn Văn Thử",
                "email": "buyer@example.com",
                "phone": "+84 912 345 678",
                "address": {
                    "line1": "12 Tràng Tiền",
                    "line2": None,
                    "city": "Hà Nội",
                    "region": None,
                    "postal_code": "100000",
                    "country": "VN",
                },
                "locale": "vi",
            },
            "items": [
                {"sku": "SPM-DICT-PRO", "product_name": "SPM Dictionary Pro", "quantity": 1, "unit_price": "49.00"}
            ],
            "marketing_consent": True,
        },
    ),
    UPGRADE_RELEASED: Example(
        source="https://releases.example/spm",
        data={
            "release_id": "SPM-DICT-PRO-5.2.0",
            "sku": "SPM-DICT-PRO",
            "version": "5.2.0",
            "released_at": "2026-11-29T00:00:00Z",
            "title": "SPM Dictionary Pro 5.2",
            "notes_url": "https://spmgroup.vn/notes/dict-pro-5.2",
            "download_url": "https://spmgroup.vn/dl/dict-pro-5.2.exe",
            "eligible_since": "2026-01-01T00:00:00Z",
            "new_registration": False,
        },
    ),
    PRODUCT_ANNOUNCED: Example(
        source="https://releases.example/spm",
        data={
            "announcement_id": "news-2026-11-ocr-4",
            "title": "SPM OCR 4",
            "summary": "Nhận dạng chữ nhanh hơn.",
            "url": "https://spmgroup.vn/news/ocr-4",
        },
    ),
}
