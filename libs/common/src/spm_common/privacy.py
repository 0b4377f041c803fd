"""Privacy requests (CONTRACT section 6): the two events every service shares.

The contact service takes a person's request, has it confirmed by e-mail, and publishes
`privacy.request.confirmed`. Every service that keeps personal data answers it, once per request, with
`privacy.request.completed`: for access, `export` holds what it keeps about the address; for erasure,
`summary` says what it erased, what it must keep and why. When all have answered, contact asks the notifier
for the one e-mail to the person.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal
from uuid import UUID

from pydantic import ConfigDict, Field

from spm_common.db import Connection
from spm_common.envelope import CloudEvent, Payload, new_event
from spm_common.notifications import Locale

PRIVACY_REQUEST_CONFIRMED = "privacy.request.confirmed"
PRIVACY_REQUEST_COMPLETED = "privacy.request.completed"

RequestKind = Literal["access", "erasure"]
# The services that keep personal data, each of which answers every confirmed request.
AnsweringService = Literal["contact", "orders", "notifier", "audit"]
ANSWERING_SERVICES: tuple[AnsweringService, ...] = ("contact", "orders", "notifier", "audit")


class PrivacyRequestConfirmed(Payload):
    """A person followed the confirmation link: every service now answers for its own data."""

    model_config = ConfigDict(frozen=True)
    event_type: ClassVar[str] = PRIVACY_REQUEST_CONFIRMED

    request_id: UUID
    kind: RequestKind
    # As the person gave it, trimmed; each service matches it case-insensitively against what it keeps
    # (the services do not yet normalise addresses one way).
    email: str = Field(min_length=3, max_length=254)
    locale: Locale = "vi"
    confirmed_at: datetime


class PrivacyRequestCompleted(Payload):
    """One service's answer to one request. `export` only for access; never anyone else's data."""

    model_config = ConfigDict(frozen=True)
    event_type: ClassVar[str] = PRIVACY_REQUEST_COMPLETED

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


# Answering, the same in every service -------------------------------------------------------------------


def normalise_address(email: str) -> str:
    """The one spelling services compare an address in: NFC, trimmed, lower case."""
    return unicodedata.normalize("NFC", email).strip().lower()


async def first_answer(conn: Connection, request: PrivacyRequestConfirmed) -> bool:
    """Record that this service answers `request` now (in the caller's transaction, the one that erases and
    enqueues the answer); False when it answered it before, so a redelivered request, even under another
    event id, is neither answered nor erased twice."""
    inserted = await conn.fetchval(
        "INSERT INTO privacy_answered (request_id, kind) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING true",
        request.request_id,
        request.kind,
    )
    return bool(inserted)


def completed(
    source: str,
    service: AnsweringService,
    request: PrivacyRequestConfirmed,
    summary: str,
    counts: dict[str, int],
    export: dict[str, Any] | None = None,
) -> CloudEvent:
    """The service's answer, for its outbox; `export` only for access."""
    return new_event(
        PRIVACY_REQUEST_COMPLETED,
        source,
        PrivacyRequestCompleted(
            request_id=request.request_id,
            service=service,
            kind=request.kind,
            summary=summary,
            counts=counts,
            export=export if request.kind == "access" else None,
            completed_at=datetime.now(UTC),
        ),
        purpose="privacy-request",
    )


async def forget_published(conn: Connection, spellings: Iterable[str]) -> int:
    """Delete the already published events of this schema's outbox that hold one of these spellings of an
    address (kept there for `SPM_OUTBOX_RETENTION_HOURS` only, but erasure does not wait for that). Events not
    yet published stay: what they ask for (an e-mail, a reply) is the recipient's business to receive."""
    needles = sorted({s for s in spellings if s})
    if not needles:
        return 0
    status = await conn.execute(
        "DELETE FROM outbox WHERE published_at IS NOT NULL"
        " AND EXISTS (SELECT 1 FROM unnest($1::text[]) AS n(s) WHERE position(convert_to(n.s, 'UTF8') IN body) > 0)",
        needles,
    )
    return int(status.split()[-1])
