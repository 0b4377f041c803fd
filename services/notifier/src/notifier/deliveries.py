"""Recording deliveries when requests arrive, and sending the due ones."""

from __future__ import annotations

import asyncio
import hashlib
import hmac

import aiosmtplib
import asyncpg
import orjson
from spm_common.envelope import CloudEvent, new_event
from spm_common.logging import bound_contextvars, get_logger
from spm_common.notifications import (
    NOTIFICATION_SENT,
    NotificationOutcome,
    NotificationRequested,
    message_id_for,
)
from spm_common.outbox import enqueue
from spm_common.pgnotify import Listener
from spm_common.redaction import describe_error

from notifier.mail import build_message
from notifier.settings import Settings

log = get_logger(__name__)
DUE_CHANNEL = "spm_notifier_due"


def recipient_ref(email: str, key: bytes) -> str:
    return hmac.new(key, email.strip().lower().encode(), hashlib.sha256).hexdigest()


async def record(conn: asyncpg.Connection, event: CloudEvent, settings: Settings) -> None:
    """Handler of notification.requested: one pending delivery per (event, recipient), sent later."""
    request = NotificationRequested.model_validate(event.data)
    message_id = request.message_id or message_id_for(f"n-{event.id}", settings.mail_from)
    await conn.execute(
        "INSERT INTO deliveries (request_event_id, recipient_ref, purpose, template, locale, reference,"
        " message_id, request) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        " ON CONFLICT (request_event_id, recipient_ref) DO NOTHING",
        event.id,
        recipient_ref(request.recipient.email, settings.recipient_key()),
        request.purpose,
        request.template,
        request.locale,
        request.reference,
        message_id,
        orjson.dumps(request.model_dump(mode="json")).decode(),
    )
    await conn.execute("SELECT pg_notify($1, '')", DUE_CHANNEL)


async def send_due(pool: asyncpg.Pool, settings: Settings, source: str, batch: int = 50) -> int:
    """Send what is due, each in its own transaction; return how many were attempted."""
    attempted = 0
    for _ in range(batch):
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT id, request_event_id, message_id, request FROM deliveries"
                " WHERE status = 'pending' AND next_attempt_at <= now()"
                " ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
            )
            if row is None:
                return attempted
            attempted += 1
            request = NotificationRequested.model_validate_json(row["request"])
            with bound_contextvars(event_id=row["request_event_id"]):
                outcome = await _send(request, row["message_id"], settings)
            if outcome is None:
                await conn.execute(
                    "UPDATE deliveries SET status = 'sent', sent_at = now(), attempts = attempts + 1,"
                    " request = NULL WHERE id = $1",
                    row["id"],
                )
            else:
                await conn.execute(
                    "UPDATE deliveries SET attempts = attempts + 1, last_error = $2,"
                    " next_attempt_at = now() + interval '5 seconds' WHERE id = $1",
                    row["id"],
                    outcome,
                )
                continue
            await enqueue(
                conn,
                new_event(
                    NOTIFICATION_SENT,
                    source,
                    NotificationOutcome(
                        request_event_id=row["request_event_id"],
                        reference=request.reference,
                        purpose=request.purpose,
                        template=request.template,
                        status="sent",
                    ),
                    purpose=request.purpose,
                ),
            )
    return attempted


async def _send(request: NotificationRequested, message_id: str, settings: Settings) -> str | None:
    try:
        message = build_message(request, message_id, settings.mail_from)
    except KeyError as exc:  # a template this notifier does not know: retried later, never blocking the rest
        return describe_error(exc)
    try:
        await aiosmtplib.send(
            message, hostname=settings.smtp_host, port=settings.smtp_port, start_tls=False, timeout=10
        )
    except (aiosmtplib.SMTPException, OSError) as exc:
        log.warning("sending failed; will retry", error=describe_error(exc))
        return describe_error(exc)
    log.info("e-mail sent", template=request.template)
    return None


async def sender_loop(pool: asyncpg.Pool, settings: Settings, source: str) -> None:
    """Sends due deliveries; wakes when one is recorded, and polls for retries that come due."""
    listener = Listener(settings.role_database_url(), DUE_CHANNEL)
    try:
        while True:
            try:
                await listener.ensure()
                while await send_due(pool, settings, source):
                    pass
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("sender loop failed; backing off", error=describe_error(exc))
                await listener.close()
                await asyncio.sleep(1)
            await listener.wait(1.0)
    finally:
        await listener.close()
