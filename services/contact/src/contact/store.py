"""The contact service's SQL, nothing else."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import NamedTuple

import asyncpg
import orjson
from spm_common.addresses import normalise_address
from spm_common.db import Connection
from spm_common.envelope import OutboxRow
from spm_common.outbox import ENQUEUE_FROM_ARRAYS, NOTIFY, outbox_arrays
from spm_common.ratelimit import Buckets

from contact.intake import Received

# Messages


async def insert_messages(conn: Connection, messages: list[tuple[Received, int | None, list[OutboxRow]]]) -> None:
    """Store messages (each with the policy version in force and its events) in one statement: one round
    trip, one implicit transaction, one outbox wake-up. The messages travel as one JSON document: asyncpg
    encodes an array parameter element by element, with Python-level type checks on each (~1 µs a value)."""
    rows = [
        {
            "id": message.id,
            "name": message.name,
            "email": message.email,
            "email_key": normalise_address(message.email),
            "subject": message.subject,
            "body": message.body,
            "locale": message.locale,
            "ack_message_id": message.ack_message_id,
            "received_at": message.received_at,
            "policy_version": policy_version,
        }
        for message, policy_version, _ in messages
    ]
    events = [event for _, _, message_events in messages for event in message_events]
    await conn.execute(
        "WITH message AS ("
        "  INSERT INTO messages"
        "  (id, name, email, email_key, subject, body, locale, ack_message_id, received_at, policy_version)"
        "  SELECT * FROM jsonb_to_recordset($1::jsonb) AS m(id uuid, name text, email text, email_key text,"
        "  subject text,"
        "  body text, locale text, ack_message_id text, received_at timestamptz, policy_version integer)),"
        f" events AS ({ENQUEUE_FROM_ARRAYS.format(ids='$2', types='$3', bodies='$4')})"
        f" SELECT {NOTIFY}",
        orjson.dumps(rows).decode(),
        *outbox_arrays(events),
    )


_SUMMARY = (
    "SELECT m.id, m.name, m.email, m.subject, m.locale, m.status, m.received_at, m.closed_at, m.closed_by,"
    " m.policy_version, m.ack_status, m.ack_error,"
    " (SELECT count(*) FROM replies r WHERE r.message_id = m.id) AS reply_count"
    " FROM messages m"
)
# What the state filter means: open is every message not closed.
STATES = {"open": ["new", "answered"], "closed": ["closed"]}


async def list_messages(
    conn: Connection,
    *,
    status: str | None,
    text: str | None,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
    state: str | None = None,
) -> list[asyncpg.Record]:
    """Newest first, after the (received_at, id) cursor where given; `text` matches name, address, subject
    or body as a phrase (its words, in order), insensitive to case and diacritics (the migration's
    `search_document`, whose words its full-text index serves)."""
    pattern = text or None
    return await conn.fetch(
        _SUMMARY + " WHERE ($1::text IS NULL OR m.status = $1)"
        " AND ($6::text[] IS NULL OR m.status = ANY($6))"
        " AND ($2::text IS NULL OR to_tsvector('simple'::regconfig, search_document(m.name, m.email, m.subject,"
        " m.body)) @@ phraseto_tsquery('simple'::regconfig, fold($2)))"
        " AND ($3::timestamptz IS NULL OR (m.received_at, m.id) < ($3, $4::uuid))"
        " ORDER BY m.received_at DESC, m.id DESC LIMIT $5",
        status,
        pattern,
        before[0] if before else None,
        before[1] if before else None,
        limit,
        STATES[state] if state else None,
    )


async def get_message(conn: Connection, message_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT m.*, (SELECT count(*) FROM replies r WHERE r.message_id = m.id) AS reply_count"
        " FROM messages m WHERE m.id = $1",
        message_id,
    )


async def lock_message(conn: Connection, message_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, name, email, subject, locale, status, ack_message_id FROM messages WHERE id = $1 FOR UPDATE",
        message_id,
    )


async def message_exists(conn: Connection, message_id: uuid.UUID) -> bool:
    return bool(await conn.fetchval("SELECT true FROM messages WHERE id = $1", message_id))


async def mark_answered(conn: Connection, message_id: uuid.UUID) -> None:
    await conn.execute("UPDATE messages SET status = 'answered' WHERE id = $1 AND status = 'new'", message_id)


async def close_message(
    conn: Connection, message_id: uuid.UUID, closed_at: datetime, operator: str | None = None
) -> datetime | None:
    """Returns the closing time, or None where the message does not exist or was closed already."""
    result: datetime | None = await conn.fetchval(
        "UPDATE messages SET status = 'closed', closed_at = $2, closed_by = $3 WHERE id = $1 AND status <> 'closed'"
        " RETURNING closed_at",
        message_id,
        closed_at,
        operator,
    )
    return result


async def reopen_message(conn: Connection, message_id: uuid.UUID) -> bool:
    """Open a closed message again (answered if it has replies, else new); False where it was not closed."""
    result = await conn.execute(
        "UPDATE messages m SET closed_at = NULL, closed_by = NULL,"
        " status = CASE WHEN EXISTS (SELECT 1 FROM replies r WHERE r.message_id = m.id) THEN 'answered' ELSE 'new' END"
        " WHERE id = $1 AND status = 'closed'",
        message_id,
    )
    return result != "UPDATE 0"


async def set_ack_delivery(conn: Connection, message_id: uuid.UUID, status: str, error: str | None) -> bool:
    result = await conn.execute(
        "UPDATE messages SET ack_status = $2, ack_error = $3"
        " WHERE id = $1 AND NOT (ack_status = 'sent' AND $2 = 'failed')",
        message_id,
        status,
        error,
    )
    return result != "UPDATE 0"


async def delete_messages_before(
    conn: Connection, cutoff: datetime, limit: int
) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """Delete up to `limit` messages received before `cutoff` and their replies; return both sets of ids."""
    row = await conn.fetchrow(
        "WITH doomed AS ("
        "  SELECT id FROM messages WHERE received_at < $1 ORDER BY received_at LIMIT $2 FOR UPDATE SKIP LOCKED),"
        " gone_replies AS (DELETE FROM replies WHERE message_id IN (SELECT id FROM doomed) RETURNING id),"
        " gone AS (DELETE FROM messages WHERE id IN (SELECT id FROM doomed) RETURNING id)"
        " SELECT coalesce((SELECT array_agg(id) FROM gone), '{}') AS messages,"
        " coalesce((SELECT array_agg(id) FROM gone_replies), '{}') AS replies",
        cutoff,
        limit,
    )
    assert row is not None  # a SELECT without FROM: always one row
    return list(row["messages"]), list(row["replies"])


# Replies


async def insert_reply(
    conn: Connection,
    reply_id: uuid.UUID,
    message_id: uuid.UUID,
    body: str,
    mail_message_id: str,
    created_at: datetime,
    operator: str | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO replies (id, message_id, body, mail_message_id, created_at, replied_by)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        reply_id,
        message_id,
        body,
        mail_message_id,
        created_at,
        operator,
    )


async def replies_of(conn: Connection, message_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, body, created_at, delivery_status, delivery_error, delivery_updated_at, replied_by"
        " FROM replies WHERE message_id = $1 ORDER BY created_at, id",
        message_id,
    )


async def set_reply_delivery(conn: Connection, reply_id: uuid.UUID, status: str, error: str | None) -> bool:
    result = await conn.execute(
        "UPDATE replies SET delivery_status = $2, delivery_error = $3, delivery_updated_at = now()"
        " WHERE id = $1 AND NOT (delivery_status = 'sent' AND $2 = 'failed')",
        reply_id,
        status,
        error,
    )
    return result != "UPDATE 0"


# Privacy policy


async def next_policy_version(conn: Connection) -> int:
    # Two operators publishing at once must not both take the same number: serialise on the table.
    await conn.execute("LOCK TABLE privacy_policies IN SHARE ROW EXCLUSIVE MODE")
    version: int = await conn.fetchval("SELECT coalesce(max(version), 0) + 1 FROM privacy_policies")
    return version


async def insert_policy(
    conn: Connection, version: int, text_vi: str, text_en: str, sha256: str, effective_from: datetime
) -> datetime | None:
    """Returns the publication time, or None where the version exists already."""
    result: datetime | None = await conn.fetchval(
        "INSERT INTO privacy_policies (version, text_vi, text_en, sha256, effective_from)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (version) DO NOTHING RETURNING published_at",
        version,
        text_vi,
        text_en,
        sha256,
        effective_from,
    )
    return result


async def policy_digest(conn: Connection, version: int) -> str | None:
    result: str | None = await conn.fetchval("SELECT sha256 FROM privacy_policies WHERE version = $1", version)
    return result


async def get_policy(conn: Connection, version: int | None) -> asyncpg.Record | None:
    """The version asked for, or the one in force now."""
    if version is not None:
        return await conn.fetchrow("SELECT * FROM privacy_policies WHERE version = $1", version)
    return await conn.fetchrow(
        "SELECT * FROM privacy_policies WHERE effective_from <= now() ORDER BY version DESC LIMIT 1"
    )


# Rate limits


class Admission(NamedTuple):
    client_hits: int
    global_hits: int | None  # None where the attempt was over its client's limit, so not counted globally
    policy_version: int | None


async def admit(conn: Connection, attempts: list[tuple[Buckets, datetime]]) -> list[Admission]:
    """What the intake needs before storing, for many attempts in one round trip, in their order: count each
    attempt in its client's bucket and, where that stays within the client's limit, in the global one; and
    find the privacy policy version in force at its time. Returns (client hits, global hits or None, policy
    version or None) of each attempt, the hits counted as if the attempts had come one after another.

    A bucket's row is updated once per statement (by the number of attempts in it), so each attempt's count
    is the new total less those after it in the batch. The counters are an unlogged table and this statement
    writes nothing else, so its commit waits for no disk flush and the hot rows stay locked for microseconds;
    the rows are locked in one order (client buckets sorted, then the global one), so replicas cannot
    deadlock each other."""
    rows = await conn.fetch(
        "WITH attempt AS ("
        "  SELECT * FROM jsonb_to_recordset($1::jsonb) AS a(n integer, client text, client_start timestamptz,"
        "  client_end timestamptz, client_limit integer, overall text, overall_start timestamptz,"
        "  overall_end timestamptz, at timestamptz)),"
        " client AS ("
        "  INSERT INTO rate_windows (bucket, window_start, hits, expires_at)"
        "  SELECT client, client_start, count(*), max(client_end) FROM attempt"
        "  GROUP BY client, client_start ORDER BY client, client_start"
        "  ON CONFLICT (bucket, window_start) DO UPDATE SET hits = rate_windows.hits + excluded.hits"
        "  RETURNING bucket, window_start, hits),"
        " client_counted AS ("
        "  SELECT a.*, c.hits - count(*) OVER same_bucket"
        "  + row_number() OVER (same_bucket ORDER BY a.n) AS client_hits"
        "  FROM attempt a JOIN client c ON (c.bucket, c.window_start) = (a.client, a.client_start)"
        "  WINDOW same_bucket AS (PARTITION BY a.client, a.client_start)),"
        " within AS ("
        "  SELECT n, overall, overall_start, overall_end, count(*) OVER same_bucket AS in_batch,"
        "  row_number() OVER (same_bucket ORDER BY n) AS position FROM client_counted"
        "  WHERE client_hits <= client_limit WINDOW same_bucket AS (PARTITION BY overall, overall_start)),"
        " overall AS ("
        "  INSERT INTO rate_windows (bucket, window_start, hits, expires_at)"
        "  SELECT overall, overall_start, count(*), max(overall_end) FROM within"
        "  GROUP BY overall, overall_start ORDER BY overall, overall_start"
        "  ON CONFLICT (bucket, window_start) DO UPDATE SET hits = rate_windows.hits + excluded.hits"
        "  RETURNING bucket, window_start, hits)"
        " SELECT c.client_hits, o.hits - w.in_batch + w.position AS global_hits,"
        "  (SELECT max(version) FROM privacy_policies WHERE effective_from <= c.at) AS policy_version"
        " FROM client_counted c LEFT JOIN within w ON w.n = c.n"
        " LEFT JOIN overall o ON (o.bucket, o.window_start) = (w.overall, w.overall_start)"
        " ORDER BY c.n",
        # One JSON document rather than eight arrays (see insert_messages); the columns read are named above.
        orjson.dumps([{"n": n, "at": at, **counted._asdict()} for n, (counted, at) in enumerate(attempts, 1)]).decode(),
    )
    return [Admission(int(row["client_hits"]), row["global_hits"], row["policy_version"]) for row in rows]
