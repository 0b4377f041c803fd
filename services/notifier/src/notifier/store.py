"""The notifier's SQL: deliveries, recipients (purchaser, suppression) and unsubscribes. Nothing else."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import asyncpg
from spm_common import outbox
from spm_common.db import INDEX_SCAN_CLAIM, Connection

DUE_CHANNEL = "spm_notifier_due"
# The purpose whose deliveries are deleted once sent, not kept in the log (`mark_sent`).
FORGOTTEN_ONCE_SENT = "privacy-request"

DELIVERY_COLUMNS = (
    "id, request_event_id, recipient_ref, purpose, template, locale, reference, status, attempts, last_error,"
    " operator_retries, retried_by, created_at, last_attempt_at, next_attempt_at, sent_at, failed_at,"
    " (status = 'failed' AND request IS NOT NULL) AS retryable"
)


@dataclass(frozen=True)
class NewDelivery:
    request_event_id: str
    recipient_ref: str
    purpose: str
    template: str
    locale: str
    reference: str | None
    message_id: str
    correlation_id: str | None
    request: str | None  # JSON; None when the request was refused on arrival
    status: str = "pending"
    last_error: str | None = None


async def insert_deliveries(
    conn: Connection, rows: Sequence[NewDelivery], purchasers: Sequence[str] = ()
) -> list[tuple[str, str]]:
    """Record deliveries, mark `purchasers` (recipient refs) as purchasers, and wake the sender when a pending
    delivery is new, in one statement; return the (request event id, recipient ref) of the deliveries that are
    new (one recorded before, or twice in `rows`, is not)."""
    if not rows:
        return []
    new = await conn.fetchrow(
        "WITH purchaser AS (INSERT INTO recipients (recipient_ref, purchaser_since)"
        "  SELECT DISTINCT ref, now() FROM unnest($12::text[]) AS x(ref)"
        "  ON CONFLICT (recipient_ref) DO UPDATE"
        "  SET purchaser_since = COALESCE(recipients.purchaser_since, EXCLUDED.purchaser_since)),"
        " new AS (INSERT INTO deliveries (request_event_id, recipient_ref, purpose, template, locale, reference,"
        "  message_id, correlation_id, request, status, last_error, failed_at)"
        "  SELECT e, r, p, t, l, ref, m, c, q::jsonb, s, err, CASE WHEN s = 'failed' THEN now() END"
        "  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],"
        "   $8::text[], $9::text[], $10::text[], $11::text[]) AS x(e, r, p, t, l, ref, m, c, q, s, err)"
        "  ON CONFLICT (request_event_id, recipient_ref) DO NOTHING RETURNING request_event_id, recipient_ref, status)"
        " SELECT array(SELECT request_event_id FROM new) AS event_ids, array(SELECT recipient_ref FROM new) AS refs,"
        f"  CASE WHEN EXISTS (SELECT FROM new WHERE status = 'pending') THEN pg_notify('{DUE_CHANNEL}', '') END",
        [d.request_event_id for d in rows],
        [d.recipient_ref for d in rows],
        [d.purpose for d in rows],
        [d.template for d in rows],
        [d.locale for d in rows],
        [d.reference for d in rows],
        [d.message_id for d in rows],
        [d.correlation_id for d in rows],
        [d.request for d in rows],
        [d.status for d in rows],
        [d.last_error for d in rows],
        list(purchasers),
    )
    assert new is not None  # the statement ends in a SELECT without FROM: always one row
    return list(zip(new["event_ids"], new["refs"], strict=True))


async def notify_due(conn: Connection) -> None:
    await conn.execute(f"SELECT pg_notify('{DUE_CHANNEL}', '')")


async def release_expired_leases(conn: Connection) -> int:
    """Deliveries whose sender vanished mid-send are due again (the documented crash window)."""
    result = await conn.execute(
        "UPDATE deliveries SET status = 'pending', lease_until = NULL, next_attempt_at = now()"
        " WHERE status = 'sending' AND lease_until < now()"
    )
    return int(result.split()[-1])


# The sender's claim (after INDEX_SCAN_CLAIM): see `claim_due`.
CLAIM_DUE = (
    "WITH due AS ("
    "  SELECT id FROM deliveries WHERE status = 'pending' AND next_attempt_at <= now()"
    "  ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED),"
    " claimed AS ("
    "  UPDATE deliveries d SET status = 'sending', lease_until = now() + make_interval(secs => $2),"
    "   attempts = d.attempts + 1, last_attempt_at = now()"
    "  FROM due WHERE d.id = due.id"
    "  RETURNING d.id, d.request_event_id, d.recipient_ref, d.purpose, d.template, d.locale, d.reference,"
    "   d.message_id, d.correlation_id, d.request, d.attempts, d.purpose = ANY($3::text[]) AS gated)"
    " SELECT c.*, coalesce(r.purchaser_since IS NOT NULL, false) AS purchaser,"
    "  coalesce(r.suppressed_at IS NOT NULL, false) AS suppressed,"
    "  CASE WHEN c.gated"
    "   THEN ARRAY(SELECT u.category FROM unsubscribes u WHERE u.recipient_ref = c.recipient_ref)"
    "   ELSE '{}'::text[] END AS unsubscribed"
    " FROM claimed c LEFT JOIN recipients r ON c.gated AND r.recipient_ref = c.recipient_ref"
)


async def claim_due(conn: Connection, limit: int, lease_seconds: float, gated: Sequence[str]) -> list[asyncpg.Record]:
    """Lease up to `limit` due deliveries to this sender: 'sending' until the lease ends, one attempt more. One
    statement (after INDEX_SCAN_CLAIM, in a transaction of its own), which also brings, for deliveries of a
    `gated` purpose, what consent depends on: `purchaser`, `suppressed` and the `unsubscribed` categories of
    the recipient (false and empty for the others, which do not look)."""
    async with conn.transaction():
        await conn.execute(INDEX_SCAN_CLAIM)
        return await conn.fetch(CLAIM_DUE, limit, lease_seconds, list(gated))


class Sent(NamedTuple):
    """A delivery sent under its lease (the attempt count it was claimed with), and its outcome event."""

    id: int
    attempts: int
    outcome: outbox.Event


# The outcome of each delivery marked, keyed by the delivery: written only if it is marked (`mark_sent`).
_OUTCOMES = outbox.InStatement(first=3, key="bigint", kept="SELECT id FROM done", routed=True)
_MARK_SENT = (
    "WITH x AS (SELECT * FROM unnest($1::bigint[], $2::int[]) AS x(id, attempts)),"
    " sent AS (UPDATE deliveries d SET status = 'sent', sent_at = now(), lease_until = NULL, request = NULL,"
    "  last_error = NULL FROM x WHERE d.id = x.id AND d.attempts = x.attempts AND d.status = 'sending'"
    f"  AND d.purpose <> '{FORGOTTEN_ONCE_SENT}' RETURNING d.id),"
    " forgotten AS (DELETE FROM deliveries d USING x WHERE d.id = x.id AND d.attempts = x.attempts"
    f"  AND d.status = 'sending' AND d.purpose = '{FORGOTTEN_ONCE_SENT}' RETURNING d.id),"
    " done AS (SELECT id FROM sent UNION ALL SELECT id FROM forgotten),"
    f" event AS ({_OUTCOMES.insert})"
    f" SELECT array(SELECT id FROM done), {_OUTCOMES.notify}"
)


async def mark_sent(conn: Connection, sent: Sequence[Sent]) -> list[int]:
    """Sent, and the request (address, content) erased, for rows still leased under that attempt count; the
    outcome event of each row marked goes into the outbox in the same statement (one round trip, atomic on its
    own). Returns the ids marked. A delivery of a privacy request (its confirmation link, its final answer) is
    deleted rather than kept as sent: after an erasure, that mail is the last thing the system sends the
    person, and nothing of it stays (see privacy_answer)."""
    rows = await conn.fetchval(
        _MARK_SENT,
        [s.id for s in sent],
        [s.attempts for s in sent],
        *_OUTCOMES.keyed_args([outbox.Keyed(s.id, s.outcome) for s in sent]),
    )
    return list(rows)


class Retry(NamedTuple):
    """A delivery to try again after `delay` seconds; `error` (if any) is why this attempt failed."""

    id: int
    attempts: int  # the count it was claimed with: marked only if no one claimed it since
    delay: float
    error: str | None


class Failed(NamedTuple):
    """A delivery that failed for good; `keep` keeps its request so an operator may retry it."""

    id: int
    attempts: int
    error: str
    keep: bool


async def mark_retry(conn: Connection, items: Sequence[Retry]) -> list[int]:
    """Back to pending, due after each one's delay; the ids marked (those still held under their lease)."""
    rows = await conn.fetch(
        "UPDATE deliveries d SET status = 'pending', lease_until = NULL,"
        " next_attempt_at = now() + make_interval(secs => x.delay), last_error = COALESCE(x.error, d.last_error)"
        " FROM unnest($1::bigint[], $2::int[], $3::float8[], $4::text[]) AS x(id, attempts, delay, error)"
        " WHERE d.id = x.id AND d.attempts = x.attempts AND d.status = 'sending' RETURNING d.id",
        [i.id for i in items],
        [i.attempts for i in items],
        [i.delay for i in items],
        [i.error for i in items],
    )
    return [row["id"] for row in rows]


async def mark_failed(conn: Connection, items: Sequence[Failed]) -> list[int]:
    """Failed with the reason; the ids marked (those still held under their lease)."""
    rows = await conn.fetch(
        "UPDATE deliveries d SET status = 'failed', failed_at = now(), lease_until = NULL, last_error = x.error,"
        " request = CASE WHEN x.keep THEN d.request END"
        " FROM unnest($1::bigint[], $2::int[], $3::text[], $4::bool[]) AS x(id, attempts, error, keep)"
        " WHERE d.id = x.id AND d.attempts = x.attempts AND d.status = 'sending' RETURNING d.id",
        [i.id for i in items],
        [i.attempts for i in items],
        [i.error for i in items],
        [i.keep for i in items],
    )
    return [row["id"] for row in rows]


async def suppress(conn: Connection, refs_and_reasons: Sequence[tuple[str, str]]) -> None:
    await conn.executemany(
        "INSERT INTO recipients (recipient_ref, suppressed_at, suppressed_reason) VALUES ($1, now(), $2)"
        " ON CONFLICT (recipient_ref) DO UPDATE SET suppressed_at = COALESCE(recipients.suppressed_at, now()),"
        " suppressed_reason = EXCLUDED.suppressed_reason",
        refs_and_reasons,
    )


async def list_suppressions(conn: Connection, after_ref: str, limit: int) -> list[asyncpg.Record]:
    """The suppressed recipients, by reference (the keyed hash of the address: the notifier keeps no address)."""
    return await conn.fetch(
        "SELECT recipient_ref, suppressed_at, suppressed_reason FROM recipients"
        " WHERE suppressed_at IS NOT NULL AND recipient_ref > $1 ORDER BY recipient_ref LIMIT $2",
        after_ref,
        limit,
    )


async def remove_suppression(conn: Connection, ref: str, operator: str | None, reason: str) -> bool:
    """Mail to the recipient may go again; who lifted it, when and why stay on the recipient. False when the
    recipient was not suppressed."""
    lifted = await conn.fetchval(
        "UPDATE recipients SET suppressed_at = NULL, suppressed_reason = NULL, unsuppressed_at = now(),"
        " unsuppressed_by = $2, unsuppressed_reason = $3"
        " WHERE recipient_ref = $1 AND suppressed_at IS NOT NULL RETURNING true",
        ref,
        operator,
        reason,
    )
    return bool(lifted)


async def add_unsubscribe(conn: Connection, ref: str, category: str) -> bool:
    """True when this is news (the first unsubscribe of that address from that category)."""
    inserted = await conn.fetchval(
        "INSERT INTO unsubscribes (recipient_ref, category) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING true",
        ref,
        category,
    )
    return bool(inserted)


async def is_unsubscribed(conn: Connection, ref: str, category: str) -> bool:
    return bool(
        await conn.fetchval("SELECT true FROM unsubscribes WHERE recipient_ref = $1 AND category = $2", ref, category)
    )


# Rows as JSON objects for the operator API, which answers them as they are.
async def list_deliveries(conn: Connection, status: str | None, after_id: int, limit: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE ($1::text IS NULL OR status = $1) AND id > $2"
        " ORDER BY id LIMIT $3",
        status,
        after_id,
        limit,
    )
    return [dict(row) for row in rows]


async def list_newest_deliveries(
    conn: Connection, status: str | None, before_id: int, limit: int
) -> list[dict[str, Any]]:
    """Newest first: what an operator looks at first when there are more failures than a page holds."""
    rows = await conn.fetch(
        f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE ($1::text IS NULL OR status = $1) AND id < $2"
        " ORDER BY id DESC LIMIT $3",
        status,
        before_id,
        limit,
    )
    return [dict(row) for row in rows]


async def retry_failed(conn: Connection, delivery_id: int | None, operator: str | None = None) -> list[int]:
    """Failed deliveries that still hold their request become due now (one, or all when id is None); the
    operator who asked is kept on each."""
    rows = await conn.fetch(
        "UPDATE deliveries SET status = 'pending', next_attempt_at = now(), attempts = 0, failed_at = NULL,"
        " operator_retries = operator_retries + 1, retried_by = $2"
        " WHERE status = 'failed' AND request IS NOT NULL AND ($1::bigint IS NULL OR id = $1) RETURNING id",
        delivery_id,
        operator,
    )
    return [row["id"] for row in rows]


async def delivery_status(conn: Connection, delivery_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1", delivery_id)


async def erase_expired_requests(conn: Connection, retention_days: float) -> int:
    """Failed deliveries kept for an operator's retry lose their request (address, content) after retention."""
    result = await conn.execute(
        "UPDATE deliveries SET request = NULL WHERE status = 'failed' AND request IS NOT NULL"
        " AND failed_at < now() - make_interval(secs => $1)",
        retention_days * 86400.0,
    )
    return int(result.split()[-1])


@dataclass(frozen=True)
class Backlog:
    by_status: dict[str, int]  # pending, sending, failed (sent is the log: counted as it happens, not here)
    oldest_waiting_seconds: float  # age of the oldest delivery not yet sent or failed; 0 when there is none


async def backlog(conn: Connection) -> Backlog:
    """For the metrics, read at scrape time: one statement, each part over its status's partial index (no
    scan of the sent deliveries, which are most of the table)."""
    rows = await conn.fetch(
        "SELECT 'pending' AS status, count(*) AS n, min(created_at) AS oldest FROM deliveries"
        " WHERE status = 'pending'"
        " UNION ALL SELECT 'sending', count(*), min(created_at) FROM deliveries WHERE status = 'sending'"
        " UNION ALL SELECT 'failed', count(*), NULL FROM deliveries WHERE status = 'failed'"
        " UNION ALL SELECT 'now', 0, now()"
    )
    now = next(row["oldest"] for row in rows if row["status"] == "now")
    waiting = [row["oldest"] for row in rows if row["status"] in ("pending", "sending") and row["oldest"]]
    return Backlog(
        by_status={row["status"]: row["n"] for row in rows if row["status"] != "now"},
        oldest_waiting_seconds=(now - min(waiting)).total_seconds() if waiting else 0.0,
    )
