"""What may be sent to whom: each template's purpose and context, and the consent rules of the privacy policy.

An address known only from a contact message gets answer-message mail and nothing else; free-upgrade and
product-news mail is marketing-like and stops at an unsubscribe or a hard bounce; transactional mail the
person asked for (the answer to their message, their order, their lost keys) always goes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from spm_common.brokerusers import user_name
from spm_common.envelope import Purpose

Category = Literal["upgrades", "news"]
CATEGORIES: tuple[Category, ...] = ("upgrades", "news")

# Purposes whose mail carries an unsubscribe link, and the category an unsubscribe stops.
CATEGORY_OF: dict[str, Category] = {"free-upgrade": "upgrades", "product-news": "news"}
# Purposes only a purchaser may receive: anyone else is an address from a contact message, or unknown.
PURCHASER_ONLY = frozenset({"license-recovery", "free-upgrade", "product-news"})

URL_PATTERN = r"^https?://[^\s<>\"']+$"


def _url() -> Any:  # as pydantic's Field() is typed, so that it fits every field
    """An optional http(s) link: anything else (javascript:, data:) has no place in an e-mail."""
    return Field(default=None, pattern=URL_PATTERN, max_length=2000)


class _Context(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ContactAck(_Context):
    subject: str | None = Field(default=None, max_length=500)


class ContactReply(_Context):
    subject: str | None = Field(default=None, max_length=500)
    reply_body: str = Field(min_length=1, max_length=50_000)


class OrderItem(_Context):
    product_name: str = Field(min_length=1, max_length=300)
    quantity: int = Field(default=1, ge=1)
    download_url: str | None = _url()
    license_keys: list[str] = Field(default_factory=list)


class OrderConfirmation(_Context):
    order_id: str = Field(min_length=1, max_length=200)
    currency: str = Field(min_length=1, max_length=10)
    total: str = Field(min_length=1, max_length=50, coerce_numbers_to_str=True)
    items: list[OrderItem] = Field(min_length=1)


class RecoveredProduct(_Context):
    product_name: str = Field(min_length=1, max_length=300)
    download_url: str | None = _url()
    license_keys: list[str] = Field(default_factory=list)


class LicenseRecovery(_Context):
    products: list[RecoveredProduct] = Field(min_length=1)


class UpgradeNotice(_Context):
    product_name: str = Field(min_length=1, max_length=300)
    title: str = Field(min_length=1, max_length=500)
    version: str = Field(min_length=1, max_length=100)
    notes_url: str | None = _url()
    download_url: str | None = _url()
    license_key: str | None = Field(default=None, max_length=200)


class ProductNews(_Context):
    title: str = Field(min_length=1, max_length=500)
    summary: str = Field(max_length=10_000)
    url: str | None = _url()


class PrivacyConfirm(_Context):
    """The link that confirms a privacy request (nothing happens until it is followed)."""

    kind: Literal["access", "erasure"]
    confirm_url: str = Field(pattern=URL_PATTERN, max_length=2000)
    expires_at: str = Field(min_length=1, max_length=100)  # as the person reads it, e.g. "2026-12-06 21:00 UTC"


class PrivacyExtension(_Context):
    """The one extension of a privacy request's deadline, with its reason."""

    kind: Literal["access", "erasure"]
    reason: str = Field(min_length=1, max_length=2000)
    due_date: str = Field(min_length=1, max_length=100)


class ServiceAnswer(_Context):
    service: str = Field(min_length=1, max_length=50)
    summary: str = Field(max_length=4000)
    counts: dict[str, int] = Field(default_factory=dict, max_length=50)


class PrivacyAnswers(_Context):
    """What each service found (access) or erased and kept (erasure)."""

    answers: list[ServiceAnswer] = Field(min_length=1, max_length=20)
    # Access only: false where the data was too large to attach (the person is told how to get it).
    attached: bool = True


@dataclass(frozen=True)
class TemplateSpec:
    purpose: Purpose
    context: type[_Context]


TEMPLATES: dict[str, TemplateSpec] = {
    "contact-ack": TemplateSpec("answer-message", ContactAck),
    "contact-reply": TemplateSpec("answer-message", ContactReply),
    "order-confirmation": TemplateSpec("fulfil-order", OrderConfirmation),
    "license-recovery": TemplateSpec("license-recovery", LicenseRecovery),
    "upgrade-notice": TemplateSpec("free-upgrade", UpgradeNotice),
    "product-news": TemplateSpec("product-news", ProductNews),
    "privacy-confirm": TemplateSpec("privacy-request", PrivacyConfirm),
    "privacy-extension": TemplateSpec("privacy-request", PrivacyExtension),
    "privacy-access": TemplateSpec("privacy-request", PrivacyAnswers),
    "privacy-erasure": TemplateSpec("privacy-request", PrivacyAnswers),
}
LOCALES = ("vi", "en")

# Who may ask for which mail: the contact service answers messages, the orders service fulfils, recovers,
# announces upgrades and news. A request from any other source, or for another purpose, is refused (and
# dead-lettered): whoever can publish to the exchange must not be able to mail anyone about anything.
REQUESTERS: dict[str, frozenset[str]] = {
    "urn:spm:contact": frozenset({"answer-message", "privacy-request"}),
    "urn:spm:orders": frozenset({"fulfil-order", "license-recovery", "free-upgrade", "product-news"}),
}


# Each purpose has one requester, so an outcome's requester follows from its purpose (a request from another
# source is refused before any delivery exists): the outcome goes back to that service only.
REQUESTER_OF: dict[str, str] = {
    purpose: source.removeprefix("urn:spm:") for source, purposes in REQUESTERS.items() for purpose in purposes
}
assert len(REQUESTER_OF) == sum(len(p) for p in REQUESTERS.values()), "a purpose with two requesters"


def requester_refusal(source: str, purpose: str) -> str | None:
    """Why `source` may not request `purpose` mail, or None when it may."""
    if purpose in REQUESTERS.get(source, frozenset()):
        return None
    return f"source {source[:100]!r} may not request {purpose[:50]!r} mail"


SERVICE_SOURCE = "urn:spm:"


@dataclass(frozen=True)
class Publishers:
    """Which RabbitMQ user may publish a request in the name of a source: the source's own service's
    (`urn:spm:orders`: `<prefix>orders`), the prefix being that of the notifier's own login
    (`<prefix>notifier`; `spm-admin bootstrap` makes `spm_orders` and `spm_notifier`). Every user that may
    publish `notification.requested` could otherwise write any source: the broker validates the publisher
    (`Meta.publisher`, spm_common.publishers), never the source.

    A notifier not logged in as a notifier user shares its login with the other services (development and
    the tests run everything as `guest`): the login then tells no one apart, and a request published with
    that login is taken on its (source, purpose) pair alone. Production never does this (`production`), and
    refuses to start with such a login (notifier.settings).
    """

    login: str
    production: bool = False

    @property
    def prefix(self) -> str | None:
        """The prefix of the services' users, or None when the notifier's login is no notifier user."""
        own = user_name("notifier", "")
        if self.login.endswith(own) and len(self.login) > len(own):
            return self.login[: -len(own)]
        return None

    def refusal(self, source: str, publisher: str | None) -> str | None:
        """Why a request with this `source` published by `publisher` is not believed, or None. Names the
        claimed source and the login, nothing of the request."""
        prefix = self.prefix
        if prefix is None and not self.production and publisher == self.login:
            return None  # a shared login (see the class): the (source, purpose) pair alone decides
        claimed = source[:100]
        if publisher is None:
            return f"source {claimed!r} came with no publisher the broker vouches for (AMQP user_id)"
        if prefix is not None and source.startswith(SERVICE_SOURCE):
            expected = user_name(source.removeprefix(SERVICE_SOURCE), prefix)
            if publisher == expected:
                return None
        return f"source {claimed!r} was published by RabbitMQ user {publisher[:100]!r}, not by that service's user"


def check_request(template: str, purpose: str, context: dict[str, Any]) -> str | None:  # context: any JSON
    """Why a request can never be sent as asked (a reason fit for the delivery log), or None."""
    spec = TEMPLATES.get(template)
    if spec is None:
        return f"unknown template {template!r}"
    if spec.purpose != purpose:
        return f"template {template} is not for purpose {purpose}"
    try:
        spec.context.model_validate(context)
    except ValidationError as exc:
        # Field names and what is wrong with them, never the values (they may be personal data).
        fields = sorted({".".join(str(p) for p in e["loc"]) or "context" for e in exc.errors()})
        return f"invalid context for {template}: {', '.join(fields)}"
    return None


@dataclass(frozen=True)
class RecipientFacts:
    """What the notifier knows about one recipient reference when it is about to send."""

    purchaser: bool = False
    suppressed: bool = False
    unsubscribed: frozenset[str] = field(default_factory=frozenset)


# The reference of an operator's test send (the orders service's release desk: the e-mail purchasers will get,
# sent first to the operator's own address, which need not have bought anything). Only a service allowed the
# purpose can ask for it (`requester_refusal`), and unsubscribes and bounces still apply.
OPERATOR_TEST_PREFIX = "test:"


def refusal(purpose: str, facts: RecipientFacts, reference: str | None = None) -> str | None:
    """Why this purpose may not reach this recipient now, or None when it may."""
    operator_test = (reference or "").startswith(OPERATOR_TEST_PREFIX)
    if purpose in PURCHASER_ONLY and not facts.purchaser and not operator_test:
        return f"refused: {purpose} mail goes to purchasers only, and this address is not one"
    category = CATEGORY_OF.get(purpose)
    if category is not None and category in facts.unsubscribed:
        return f"refused: the address unsubscribed from {category}"
    if category is not None and facts.suppressed:
        return "refused: the address is suppressed after a hard bounce"
    return None
