"""Privacy requests (CONTRACT section 6): the two events every service shares.

The contact service takes a person's request, has it confirmed by e-mail, and publishes
`privacy.request.confirmed`. Every service that keeps personal data answers it, once per request, with
`privacy.request.completed`: for access, `export` holds what it keeps about the address; for erasure,
`summary` says what it erased, what it must keep and why. When all have answered, contact asks the notifier
for the one e-mail to the person.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from spm_common.notifications import Locale

PRIVACY_REQUEST_CONFIRMED = "privacy.request.confirmed"
PRIVACY_REQUEST_COMPLETED = "privacy.request.completed"

RequestKind = Literal["access", "erasure"]
# The services that keep personal data, each of which answers every confirmed request.
AnsweringService = Literal["contact", "orders", "notifier", "audit"]
ANSWERING_SERVICES: tuple[AnsweringService, ...] = ("contact", "orders", "notifier", "audit")


class PrivacyRequestConfirmed(BaseModel):
    """A person followed the confirmation link: every service now answers for its own data."""

    model_config = ConfigDict(frozen=True)

    request_id: UUID
    kind: RequestKind
    # As the person gave it, trimmed; each service matches it case-insensitively against what it keeps
    # (the services do not yet normalise addresses one way).
    email: str = Field(min_length=3, max_length=254)
    locale: Locale = "vi"
    confirmed_at: datetime


class PrivacyRequestCompleted(BaseModel):
    """One service's answer to one request. `export` only for access; never anyone else's data."""

    model_config = ConfigDict(frozen=True)

    request_id: UUID
    service: AnsweringService
    kind: RequestKind
    # What was found or erased, what is kept and why, for the person to read (English; contact translates
    # the fixed phrases it knows into the person's language).
    summary: str = Field(max_length=4000)
    # Counts by kind of record, e.g. {"messages": 3, "replies": 1}: what the e-mail and the operators show.
    counts: dict[str, int] = Field(default_factory=dict)
    export: dict[str, Any] | None = None
    completed_at: datetime
