"""Privacy requests (CONTRACT section 6): the two events every service shares.

The contact service takes a person's request, has it confirmed by e-mail, and publishes
`privacy.request.confirmed`. Every service that keeps personal data answers it, once per request, with
`privacy.request.completed`: for access, `export` holds what it keeps about the address; for erasure,
`summary` says what it erased, what it must keep and why. When all have answered, contact asks the notifier
for the one e-mail to the person.
"""

from __future__ import annotations

import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal
from uuid import UUID

from aio_pika.abc import AbstractIncomingMessage
from pydantic import ConfigDict, Field

from spm_common import deadletters, outbox
from spm_common.addresses import normalise_address
from spm_common.db import Connection
from spm_common.envelope import CloudEvent, Payload, new_event
from spm_common.logging import get_logger
from spm_common.notifications import Locale
from spm_common.runtime import connection_named
from spm_common.settings import ServiceSettings
from spm_common.topology import Topology

log = get_logger(__name__)

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
    # As the person gave it, trimmed; each service matches it against what it keeps in the one spelling of
    # `spm_common.addresses.normalise_address`.
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
    return await outbox.forget_published_containing(conn, needles)


# Dead letters --------------------------------------------------------------------------------------------

# Requests whose removals an eraser remembers (see DeadLetterEraser): far more than can be in flight at once.
_REMEMBERED = 1000


class DeadLetterEraser:
    """Erasure's reach into the service's own dead letters: every message on its `.dlq` queue that names the
    address goes (with the name, phone and postal address it carries about that person), and so does any row
    of its `dead_letters_parked` table that still names it; the others stay, in their order.

    Whole messages go, rather than masked copies: a dead letter is kept to be replayed, and one stripped of its
    addressee can only fail again. Only what names the address is recognised: a dead letter that names the
    person some other way only (a name alone may be someone else's) waits for the retention to park it masked
    (SPM_DLQ_RETENTION_DAYS)."""

    def __init__(self, amqp_url: str, topology: Topology) -> None:
        self._amqp_url = amqp_url
        self._topology = topology
        self._queue = topology.dead_letter_queue_name
        # Removed from the queue so far per request, by this process. The queue is not rolled back with the
        # transaction: a batch that fails for another message's sake runs its handlers again one by one, and
        # that run finds nothing left to remove, but its answer must still count what the first took away.
        self._removed: OrderedDict[UUID, int] = OrderedDict()

    @classmethod
    def of(cls, settings: ServiceSettings) -> DeadLetterEraser:
        """The eraser of this service's dead letters, through its own broker user (it may read its queues)."""
        url = connection_named(settings.role_amqp_url(), f"spm-{settings.service} dead-letter erasure")
        return cls(url, Topology(settings.exchange, settings.service))

    async def erase(self, conn: Connection, request: PrivacyRequestConfirmed, spellings: Iterable[str] = ()) -> int:
        """Remove the dead letters that name the request's address (or one of these other spellings of it), in
        the transaction of the erasure; return how many this request removed, from the queue and the parking
        table. Holds the queue's lock (deadletters.LOCK) until that transaction ends."""
        addresses = sorted({normalise_address(request.email), *(normalise_address(s) for s in spellings if s)})
        await conn.execute(deadletters.LOCK, self._queue)
        removal = await deadletters.remove_dead_letters(self._amqp_url, self._topology, _naming(addresses))
        parked = await _forget_parked(conn, addresses)
        queued = self._removed.pop(request.request_id, 0) + removal.removed
        self._removed[request.request_id] = queued
        while len(self._removed) > _REMEMBERED:
            self._removed.popitem(last=False)
        if removal.removed or parked:
            log.info(
                "dead letters erased",
                request_id=str(request.request_id),
                queue=self._queue,
                count=removal.removed,
                parked=parked,
                kept=removal.kept,
            )
        return queued + parked


def _naming(addresses: list[str]) -> Callable[[AbstractIncomingMessage], bool]:
    tests = [deadletters.about_address(a) for a in addresses]
    return lambda message: any(test(message) for test in tests)


async def _forget_parked(conn: Connection, addresses: list[str]) -> int:
    """Delete the parked dead letters that still name one of the addresses. Parking masks addresses, so this is
    none unless the masking missed one (a shape it did not know, or a row parked before it did): cheap to ask."""
    rows = await conn.fetch(
        "SELECT id, lower(concat_ws(' ', body::text, reason, message_id, event_type)) AS text"
        " FROM dead_letters_parked WHERE EXISTS (SELECT 1 FROM unnest($1::text[]) AS a(s)"
        " WHERE strpos(lower(concat_ws(' ', body::text, reason, message_id, event_type)), a.s) > 0)",
        addresses,
    )
    patterns = [deadletters.address_pattern(a) for a in addresses]
    doomed = [r["id"] for r in rows if any(p.search(unicodedata.normalize("NFC", r["text"])) for p in patterns)]
    if doomed:
        await conn.execute("DELETE FROM dead_letters_parked WHERE id = ANY($1::bigint[])", doomed)
    return len(doomed)
