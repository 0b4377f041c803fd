"""The notifier's answer to a confirmed privacy request (CONTRACT section 6).

What it keeps about an address is found through its recipient reference: the deliveries (purpose, template,
status, times; the request itself, address and content, only while an e-mail waits or failed), whether it is
a purchaser or suppressed after a hard bounce, and what it unsubscribed from. Access exports all of it;
erasure deletes it, and a pending delivery to the address is deleted with the rest, so nothing more goes out;
the service's dead letters that name the address go too (spm_common.privacy.DeadLetterEraser).

Except the mail of the request itself (purpose `privacy-request`): the final e-mail that tells the person
what was erased is requested by contact after every service has answered, so after this erasure; nothing
left here can refuse it (no suppression, no unsubscribe remains, and that purpose is not gated), and such a
delivery is deleted as soon as it is sent (`store.mark_sent`), so the address does not come back with it.
A delivery of that purpose still waiting when the erasure arrives is left to go out for the same reason.
"""

from __future__ import annotations

from typing import Any

import orjson
from spm_common import outbox
from spm_common.addresses import normalise_address
from spm_common.db import Connection
from spm_common.envelope import CloudEvent
from spm_common.handlers import Meta
from spm_common.logging import get_logger
from spm_common.privacy import (
    AnsweringService,
    DeadLetterEraser,
    PrivacyRequestConfirmed,
    completed,
    first_answer,
    forget_published,
)

from notifier import store
from notifier.settings import Settings
from notifier.tokens import recipient_ref

log = get_logger(__name__)
SERVICE: AnsweringService = "notifier"
# Mail about the privacy request itself: never cancelled by it, forgotten once sent.
PRIVACY_PURPOSE = store.FORGOTTEN_ONCE_SENT

_EXPORT = """
SELECT jsonb_build_object(
  'deliveries', coalesce((SELECT jsonb_agg(jsonb_build_object('purpose', purpose, 'template', template,
    'language', locale, 'status', status, 'attempts', attempts, 'last_error', last_error,
    'requested_at', created_at, 'sent_at', sent_at, 'failed_at', failed_at, 'request', request) ORDER BY id)
    FROM deliveries WHERE recipient_ref = $1), '[]'::jsonb),
  'recipient', (SELECT jsonb_build_object('purchaser_since', purchaser_since, 'suppressed_at', suppressed_at,
    'suppressed_reason', suppressed_reason, 'unsuppressed_at', unsuppressed_at,
    'unsuppressed_reason', unsuppressed_reason) FROM recipients WHERE recipient_ref = $1),
  'unsubscribes', coalesce((SELECT jsonb_agg(jsonb_build_object('category', category,
    'unsubscribed_at', unsubscribed_at) ORDER BY category) FROM unsubscribes WHERE recipient_ref = $1), '[]'::jsonb)
)::text
"""

_ERASE = f"""
WITH gone AS (DELETE FROM deliveries WHERE recipient_ref = $1 AND purpose <> '{PRIVACY_PURPOSE}'
  RETURNING status),
facts AS (DELETE FROM recipients WHERE recipient_ref = $1 RETURNING suppressed_at),
left_ AS (DELETE FROM unsubscribes WHERE recipient_ref = $1 RETURNING 1)
SELECT (SELECT count(*) FROM gone) AS deliveries,
  (SELECT count(*) FROM gone WHERE status IN ('pending', 'sending')) AS cancelled,
  (SELECT count(*) FROM facts WHERE suppressed_at IS NOT NULL) AS suppressions,
  (SELECT count(*) FROM left_) AS unsubscribes
"""


async def on_confirmed(
    conn: Connection,
    request: PrivacyRequestConfirmed,
    meta: Meta,
    *,
    settings: Settings,
    dead_letters: DeadLetterEraser,
) -> None:
    """Handler of privacy.request.confirmed, in the consumer's transaction."""
    if not await first_answer(conn, request):
        log.info("privacy request answered before", request_id=str(request.request_id))
        return
    ref = recipient_ref(request.email, settings.recipient_key())
    if request.kind == "access":
        answer = await _access(conn, ref, request, settings.source)
    else:
        answer = await _erase(conn, ref, request, settings.source, dead_letters)
    await outbox.add(conn, answer)
    log.info("privacy request answered", request_id=str(request.request_id), kind=request.kind)


async def _access(conn: Connection, ref: str, request: PrivacyRequestConfirmed, source: str) -> CloudEvent:
    # The export as Postgres built it: JSON passed on as it is.
    export: dict[str, Any] = orjson.loads(await conn.fetchval(_EXPORT, ref))
    deliveries = export["deliveries"]
    counts = {
        "deliveries": len(deliveries),
        "pending": sum(d["status"] in ("pending", "sending") for d in deliveries),
        "unsubscribes": len(export["unsubscribes"]),
        "suppressions": int(bool(export["recipient"] and export["recipient"]["suppressed_at"])),
    }
    summary = (
        f"A log of the {counts['deliveries']} e-mails sent or to be sent to this address (purpose, template,"
        " status and times; the address and content only until an e-mail has left), its unsubscribes and"
        " whether a bounce stopped mail to it."
        if deliveries or export["recipient"] or export["unsubscribes"]
        else "No e-mail to this address."
    )
    return completed(source, SERVICE, request, summary, counts, export)


async def _erase(
    conn: Connection, ref: str, request: PrivacyRequestConfirmed, source: str, dead_letters: DeadLetterEraser
) -> CloudEvent:
    row = await conn.fetchrow(_ERASE, ref)
    assert row is not None
    # notification.unsubscribed names the address, as the recipient's link carried it.
    events = await forget_published(conn, {request.email.strip(), normalise_address(request.email)})
    dead = await dead_letters.erase(conn, request)
    counts = {name: int(row[name]) for name in row.keys()}  # noqa: SIM118 (a Record's keys are its columns)
    summary = (
        f"Erased the log of {counts['deliveries']} e-mails to this address ({counts['cancelled']} not yet sent"
        " were cancelled), its unsubscribes and any bounce record. Only the e-mail that confirms this erasure"
        " is still sent, and forgotten once it has left."
    )
    return completed(source, SERVICE, request, summary, {**counts, "published_events": events, "dead_letters": dead})
