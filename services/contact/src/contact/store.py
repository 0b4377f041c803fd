"""The contact service's SQL, nothing else."""

from __future__ import annotations

import asyncpg

from contact.intake import Received


async def insert_message(conn: asyncpg.Connection, message: Received) -> None:
    await conn.execute(
        "INSERT INTO messages (id, name, email, subject, body, locale, ack_message_id, received_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        message.id,
        message.name,
        message.email,
        message.subject,
        message.body,
        message.locale,
        message.ack_message_id,
        message.received_at,
    )
