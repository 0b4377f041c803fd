"""The audit service's answer to a confirmed privacy request (CONTRACT section 6), by crypto-shredding.

Every entry that concerns a person carries their reference, made with a key of their own (trail.SubjectKeys).
Access exports the entries found through it: type, time and purpose (the payloads are pseudonymised already
and say nothing more about the person). Erasure deletes the key: the entries stay unchanged, so the chain
still verifies, but nothing links them to the address any more. The request's own entry (recorded just before,
in the same transaction) is referred to with that key too, so it goes unlinkable with the rest; the answer
names no address, and its export is left out of its own entry (`trail_payload`).

Entries recorded before subject keys existed carry the legacy reference (under SPM_AUDIT_SECRET); access
includes them, and erasure hides them from the search by address (see migration 0006 for what that does
not undo). Entries recorded after the erasure (the final e-mail to the person) get a new key. The service's
dead letters that name the address are removed (spm_common.privacy.DeadLetterEraser): an event the trail
could not record holds the address in clear.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from spm_common import outbox
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
)
from spm_common.redaction import describe_error

from audit import store, trail

log = get_logger(__name__)
SERVICE: AnsweringService = "audit"


def trail_payload(data: dict[str, Any]) -> dict[str, Any]:  # an event's JSON data, passed on as it is
    """A privacy.request.completed as the trail keeps it: who answered what, without the export (the person's
    data, which the trail has no reason to hold a second time)."""
    return {k: v for k, v in data.items() if k != "export"}


async def references(conn: Connection, email: str, secret: bytes) -> list[str]:
    """The references the trail knows a person by, for a search by address: the one under their own key (if
    they have one: none when never seen, or erased), and the legacy one unless erased. Creates nothing."""
    refs = []
    keys = await store.subject_keys(conn, [trail.key_lookup(email, secret)])
    for key in keys.values():
        refs.append(trail.subject_ref(email, key))
    legacy = trail.subject_ref(email, secret)
    if not await store.legacy_ref_erased(conn, legacy):
        refs.append(legacy)
    return refs


async def on_confirmed(
    conn: Connection,
    request: PrivacyRequestConfirmed,
    meta: Meta,
    *,
    secret: bytes,
    source: str,
    dead_letters: DeadLetterEraser,
) -> None:
    """Handler of privacy.request.confirmed, in the consumer's transaction, after the batch it came in was
    appended to the trail (the consumer runs the trail's handler of every event first)."""
    if not await first_answer(conn, request):
        log.info("privacy request answered before", request_id=str(request.request_id))
        return
    if request.kind == "access":
        reply = await _access(conn, request, secret, source)
    else:
        reply = await _erase(conn, request, secret, source, dead_letters)
    await outbox.add(conn, reply)
    log.info("privacy request answered", request_id=str(request.request_id), kind=request.kind)


def not_answered(meta: Meta, error: ValidationError) -> None:
    """A confirmed request that does not validate is in the trail as it came; there is nothing to answer, and
    it is not dead-lettered (a dead-letter queue would keep the address the audit does not keep)."""
    log.warning("privacy request not answered: invalid", error=describe_error(error))


async def _access(conn: Connection, request: PrivacyRequestConfirmed, secret: bytes, source: str) -> CloudEvent:
    rows = await store.entries_about(conn, await references(conn, request.email, secret))
    entries = [
        {"type": r["event_type"], "time": trail.timestamp(r["recorded_at"]), "purpose": r["purpose"]} for r in rows
    ]
    summary = (
        f"{len(entries)} entries of the audit trail concern this address (what happened, when, for which"
        " purpose); the address itself is not in them, only a reference made with a key of its own."
    )
    return completed(source, SERVICE, request, summary, {"entries": len(entries)}, {"entries": entries})


async def _erase(
    conn: Connection, request: PrivacyRequestConfirmed, secret: bytes, source: str, dead_letters: DeadLetterEraser
) -> CloudEvent:
    key = await store.delete_subject_key(conn, trail.key_lookup(request.email, secret))
    entries = await store.count_entries_about(conn, trail.subject_ref(request.email, key)) if key else 0
    legacy_ref = trail.subject_ref(request.email, secret)
    legacy = await store.count_entries_about(conn, legacy_ref)
    if legacy:
        await store.erase_legacy_ref(conn, legacy_ref)
    summary = (
        f"Destroyed the key that linked {entries + legacy} audit entries to this address: they are kept unchanged"
        " (the trail must prove that nothing in it was altered) but can no longer be connected to the address."
    )
    if legacy:
        summary += (
            f" {legacy} of them, recorded before such keys existed, no longer come up in a search by the address."
        )
    dead = await dead_letters.erase(conn, request)
    return completed(
        source, SERVICE, request, summary, {"entries": entries, "older_entries": legacy, "dead_letters": dead}
    )
