"""The contact service's answer to a confirmed privacy request (CONTRACT section 6): the messages an address
sent and the operators' replies to them.

Access exports them (subject, body, dates, replies); erasure deletes them, their replies, the published
events of the outbox that named the address, and the service's dead letters that name it
(spm_common.privacy.DeadLetterEraser), in the transaction that enqueues the answer. A message is matched on
its address in the one spelling of every service (`email_key`, `normalise_address`); the form keeps the
address itself as the visitor typed it, domain in lower case, to show and to reply to.
The workflow's own record of the request (contact.privacy) is not this module's: it ends with the request.
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

log = get_logger(__name__)
SERVICE: AnsweringService = "contact"

# Every message of the address with its replies, oldest first, as one JSON document: one round trip
# whatever the number of messages (replies grouped by message, not a query per message).
_EXPORT = """
SELECT coalesce(jsonb_agg(jsonb_build_object(
    'id', m.id, 'name', m.name, 'email', m.email, 'subject', m.subject, 'message', m.body,
    'locale', m.locale, 'status', m.status, 'received_at', m.received_at, 'closed_at', m.closed_at,
    'privacy_policy_version', m.policy_version, 'acknowledgement', m.ack_status,
    'replies', coalesce(r.replies, '[]'::jsonb)) ORDER BY m.received_at, m.id), '[]'::jsonb)::text
FROM messages m
LEFT JOIN LATERAL (
    SELECT jsonb_agg(jsonb_build_object('id', r.id, 'body', r.body, 'sent_at', r.created_at,
        'delivery', r.delivery_status) ORDER BY r.created_at, r.id) AS replies
    FROM replies r WHERE r.message_id = m.id) r ON true
WHERE m.email_key = $1
"""

_ERASE = """
WITH doomed AS (SELECT id, email FROM messages WHERE email_key = $1 FOR UPDATE),
gone_replies AS (DELETE FROM replies WHERE message_id IN (SELECT id FROM doomed) RETURNING id),
gone AS (DELETE FROM messages WHERE id IN (SELECT id FROM doomed) RETURNING id)
SELECT (SELECT count(*) FROM gone) AS messages, (SELECT count(*) FROM gone_replies) AS replies,
    array(SELECT DISTINCT email FROM doomed) AS spellings
"""


async def on_confirmed(
    conn: Connection, request: PrivacyRequestConfirmed, meta: Meta, *, source: str, dead_letters: DeadLetterEraser
) -> None:
    """Handler of privacy.request.confirmed, in the consumer's transaction."""
    if not await first_answer(conn, request):
        log.info("privacy request answered before", request_id=str(request.request_id))
        return
    address = normalise_address(request.email)
    if request.kind == "access":
        answer = await _access(conn, address, request, source)
    else:
        answer = await _erase(conn, address, request, source, dead_letters)
    await outbox.add(conn, answer)
    log.info("privacy request answered", request_id=str(request.request_id), kind=request.kind)


async def _access(conn: Connection, address: str, request: PrivacyRequestConfirmed, source: str) -> CloudEvent:
    # The export as Postgres built it: JSON passed on as it is.
    messages: list[dict[str, Any]] = orjson.loads(await conn.fetchval(_EXPORT, address))
    replies = sum(len(m["replies"]) for m in messages)
    summary = (
        f"{len(messages)} contact messages sent from this address and {replies} replies to them, kept to answer"
        " them and deleted after the retention period."
        if messages
        else "No contact message from this address."
    )
    return completed(
        source,
        SERVICE,
        request,
        summary,
        {"messages": len(messages), "replies": replies},
        {"messages": messages},
    )


async def _erase(
    conn: Connection, address: str, request: PrivacyRequestConfirmed, source: str, dead_letters: DeadLetterEraser
) -> CloudEvent:
    row = await conn.fetchrow(_ERASE, address)
    assert row is not None
    # The outbox's published events keep the address as it was written, in whichever case that was.
    events = await forget_published(conn, [address, *row["spellings"]])
    dead = await dead_letters.erase(conn, request)
    summary = (
        f"Erased {row['messages']} contact messages from this address and {row['replies']} replies to them."
        " Nothing is kept."
    )
    return completed(
        source,
        SERVICE,
        request,
        summary,
        {"messages": row["messages"], "replies": row["replies"], "published_events": events, "dead_letters": dead},
    )
