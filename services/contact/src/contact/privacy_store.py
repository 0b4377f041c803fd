"""The SQL of privacy requests (contact.privacy), nothing else; kept apart from store.py, the messages' SQL."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from spm_common.db import Connection

# Requests


async def insert_request(
    conn: Connection,
    request_id: uuid.UUID,
    kind: str,
    email: str,
    locale: str,
    received_at: datetime,
    token_expires_at: datetime,
    ack_due_at: datetime,
    due_at: datetime,
    event_ids: list[str],
) -> None:
    await conn.execute(
        "INSERT INTO privacy_requests (id, kind, email, locale, received_at, token_expires_at, ack_due_at, due_at,"
        " event_ids) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        request_id,
        kind,
        email,
        locale,
        received_at,
        token_expires_at,
        ack_due_at,
        due_at,
        event_ids,
    )


async def get_request(conn: Connection, request_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM privacy_requests WHERE id = $1", request_id)


async def lock_request(conn: Connection, request_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM privacy_requests WHERE id = $1 FOR UPDATE", request_id)


async def confirm(conn: Connection, request_id: uuid.UUID, at: datetime) -> asyncpg.Record | None:
    """Unconfirmed and unexpired -> in progress, once; None where it was not (used, expired or unknown)."""
    return await conn.fetchrow(
        "UPDATE privacy_requests SET status = 'in-progress', confirmed_at = $2"
        " WHERE id = $1 AND status = 'unconfirmed' AND token_expires_at > $2 RETURNING *",
        request_id,
        at,
    )


async def add_event_ids(conn: Connection, request_id: uuid.UUID, event_ids: list[str]) -> None:
    await conn.execute(
        "UPDATE privacy_requests SET event_ids = event_ids || $2::text[] WHERE id = $1", request_id, event_ids
    )


async def extend(
    conn: Connection, request_id: uuid.UUID, at: datetime, reason: str, due_at: datetime
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "UPDATE privacy_requests SET extended_at = $2, extension_reason = $3, due_at = $4"
        " WHERE id = $1 AND status = 'in-progress' AND extended_at IS NULL RETURNING *",
        request_id,
        at,
        reason,
        due_at,
    )


async def complete(conn: Connection, request_id: uuid.UUID, at: datetime, event_id: str) -> None:
    """Done: the address and every export go; the answers' summaries and counts stay."""
    await conn.execute(
        "UPDATE privacy_requests SET status = 'completed', completed_at = $2, email = NULL, final_mail = 'queued',"
        " event_ids = event_ids || $3::text WHERE id = $1",
        request_id,
        at,
        event_id,
    )
    await conn.execute("UPDATE privacy_answers SET export = NULL WHERE request_id = $1", request_id)


async def set_acknowledged(conn: Connection, request_id: uuid.UUID, at: datetime) -> None:
    await conn.execute(
        "UPDATE privacy_requests SET acknowledged_at = $2 WHERE id = $1 AND acknowledged_at IS NULL", request_id, at
    )


async def set_final_mail(conn: Connection, request_id: uuid.UUID, status: str) -> None:
    await conn.execute(
        "UPDATE privacy_requests SET final_mail = $2 WHERE id = $1 AND final_mail IS DISTINCT FROM 'sent'",
        request_id,
        status,
    )


# The late: in progress, past half their deadline, and some service has not answered.
_LATE = (
    "r.status = 'in-progress' AND $1::timestamptz >= r.received_at + (r.due_at - r.received_at) / 2"
    " AND (SELECT count(*) FROM privacy_answers a WHERE a.request_id = r.id) < $2"
)


async def list_requests(
    conn: Connection, status: str | None, late_only: bool, now: datetime, services: int, limit: int
) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT r.* FROM privacy_requests r WHERE ($3::text IS NULL OR r.status = $3)"
        f" AND (NOT $4::boolean OR ({_LATE})) ORDER BY r.received_at DESC, r.id DESC LIMIT $5",
        now,
        services,
        status,
        late_only,
        limit,
    )


async def count_late(conn: Connection, now: datetime, services: int) -> int:
    count: int = await conn.fetchval(f"SELECT count(*) FROM privacy_requests r WHERE {_LATE}", now, services)
    return count


# Answers


async def insert_answer(
    conn: Connection,
    request_id: uuid.UUID,
    service: str,
    summary: str,
    counts: dict[str, int],
    export: dict[str, Any] | None,  # the JSON export, stored as it is sent
    answered_at: datetime,
) -> bool:
    """The service's first answer to the request; False where it had answered already."""
    result = await conn.execute(
        "INSERT INTO privacy_answers (request_id, service, summary, counts, export, answered_at)"
        " VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6) ON CONFLICT (request_id, service) DO NOTHING",
        request_id,
        service,
        summary,
        orjson.dumps(counts).decode(),
        orjson.dumps(export).decode() if export is not None else None,
        answered_at,
    )
    return result == "INSERT 0 1"


async def answers_of(conn: Connection, request_ids: list[uuid.UUID]) -> list[asyncpg.Record]:
    """Each answer without its export (for the operators)."""
    return await conn.fetch(
        "SELECT request_id, service, summary, counts::text AS counts, answered_at FROM privacy_answers"
        " WHERE request_id = ANY($1::uuid[]) ORDER BY answered_at, service",
        request_ids,
    )


async def answers_with_exports(conn: Connection, request_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT service, summary, counts::text AS counts, export::text AS export, answered_at FROM privacy_answers"
        " WHERE request_id = $1 ORDER BY service",
        request_id,
    )


# Sweeps


async def delete_unconfirmed_before(conn: Connection, cutoff: datetime) -> list[str]:
    """Requests never confirmed whose link expired before `cutoff` go, address and all; their events' ids."""
    rows = await conn.fetch(
        "DELETE FROM privacy_requests WHERE status = 'unconfirmed' AND token_expires_at < $1 RETURNING event_ids",
        cutoff,
    )
    return [event_id for row in rows for event_id in row["event_ids"]]


async def forget_published_events(conn: Connection, extra_event_ids: list[str]) -> int:
    """Delete the published outbox rows of completed requests (and `extra_event_ids`): they hold the address
    and, for access, the export. Rows not yet published stay, and stay tracked. Returns how many went."""
    gone: list[str] = [
        row["event_id"]
        for row in await conn.fetch(
            "DELETE FROM outbox WHERE published_at IS NOT NULL AND event_id IN ("
            " SELECT unnest(event_ids) FROM privacy_requests WHERE status = 'completed' AND event_ids <> '{}'"
            " UNION ALL SELECT unnest($1::text[])) RETURNING event_id",
            extra_event_ids,
        )
    ]
    # Untracked: those now gone, and those the relay's own purge took before this sweep came.
    await conn.execute(
        "UPDATE privacy_requests r SET event_ids = coalesce(("
        " SELECT array_agg(e) FROM unnest(r.event_ids) e WHERE EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = e)"
        "), '{}') WHERE r.status = 'completed' AND r.event_ids <> '{}'"
    )
    return len(gone)
