"""The idempotent consumer: every service takes its events through here.

For each message: parse the CloudEvent; in one transaction record (source, id) in the service's inbox and
run the handler for its type, so a redelivered event has no second effect. On failure the message is
not requeued hot: a transient error sends a copy to the retry queue (back after `SPM_RETRY_DELAY_MS`)
until `SPM_MAX_ATTEMPTS`; a message that cannot be valid (bad JSON, wrong shape) or that keeps failing is
sent to the dead-letter queue with its reason in the `x-spm-error` header. Only then is the original
acknowledged, so a crash at any point leaves the message in RabbitMQ. Should the failure path itself fail,
the message is requeued, and the queue's delivery limit dead-letters it at the broker.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg
from faststream import AckPolicy
from faststream.rabbit import RabbitBroker, RabbitMessage
from pydantic import ValidationError

from spm_common.db import Connection
from spm_common.envelope import ACCEPTED_CONTENT_TYPES, CONTENT_TYPE, CloudEvent
from spm_common.logging import bound_contextvars, get_logger
from spm_common.metrics import EVENTS_CONSUMED
from spm_common.redaction import describe_error
from spm_common.topology import Topology

log = get_logger(__name__)

Handler = Callable[[Connection, CloudEvent], Awaitable[None]]
ATTEMPT_HEADER = "x-spm-attempt"
ERROR_HEADER = "x-spm-error"
CATCH_ALL = "#"


class PermanentError(Exception):
    """Raised by a handler for a message that no retry can fix: it goes to the dead-letter queue at once."""


class EventConsumer:
    def __init__(
        self,
        *,
        service: str,
        broker: RabbitBroker,
        topology: Topology,
        handlers: Mapping[str, Handler],
        pool: Callable[[], asyncpg.Pool],
        max_attempts: int,
    ) -> None:
        self._service = service
        self._broker = broker
        self._topology = topology
        self._handlers = dict(handlers)
        self._pool = pool
        self._max_attempts = max_attempts
        broker.subscriber(
            topology.consumer_queue,
            ack_policy=AckPolicy.NACK_ON_ERROR,
            decoder=_raw_body,
            title=f"{topology.queue_name}:consume",
            description=f"{service} consumes: {', '.join(sorted(self._handlers))}",
        )(self.on_message)

    @property
    def routing_keys(self) -> list[str]:
        return sorted(self._handlers)

    async def on_message(self, body: bytes, message: RabbitMessage) -> None:
        headers = message.headers or {}
        attempt = int(headers.get(ATTEMPT_HEADER, 1))
        # A message without the property arrives as None; the envelope in the body still decides.
        if (message.content_type or "") not in ACCEPTED_CONTENT_TYPES:
            await self._dead_letter(message, f"unsupported content type {message.content_type!r}", attempt, "?")
            return
        try:
            event = CloudEvent.parse(body)
        except (ValidationError, ValueError) as exc:
            await self._dead_letter(message, describe_error(exc), attempt, "?")
            return
        with bound_contextvars(event_id=event.id, event_type=event.type, correlation_id=event.correlationid):
            await self._handle(event, message, attempt)

    async def _handle(self, event: CloudEvent, message: RabbitMessage, attempt: int) -> None:
        handler = self._handlers.get(event.type) or self._handlers.get(CATCH_ALL)
        if handler is None:
            log.warning("no handler for event type; acknowledged", attempt=attempt)
            EVENTS_CONSUMED.labels(self._service, event.type, "ignored").inc()
            return
        try:
            async with self._pool().acquire() as conn, conn.transaction():
                first_time = await conn.fetchval(
                    "INSERT INTO inbox (source, event_id, event_type) VALUES ($1, $2, $3)"
                    " ON CONFLICT DO NOTHING RETURNING true",
                    event.source,
                    event.id,
                    event.type,
                )
                if first_time:
                    await handler(conn, event)
        except (PermanentError, ValidationError) as exc:
            await self._dead_letter(message, describe_error(exc), attempt, event.type)
            return
        except Exception as exc:
            if attempt >= self._max_attempts:
                await self._dead_letter(message, describe_error(exc), attempt, event.type)
            else:
                await self._retry(message, describe_error(exc), attempt, event.type)
            return
        outcome = "processed" if first_time else "duplicate"
        EVENTS_CONSUMED.labels(self._service, event.type, outcome).inc()
        log.info("event processed" if first_time else "duplicate event ignored", attempt=attempt)

    async def _retry(self, message: RabbitMessage, reason: str, attempt: int, event_type: str) -> None:
        log.warning("event failed, will retry", error=reason, attempt=attempt)
        await self._republish(
            message, self._topology.retry_queue_name, {ATTEMPT_HEADER: attempt + 1, ERROR_HEADER: reason}
        )
        EVENTS_CONSUMED.labels(self._service, event_type, "retried").inc()

    async def _dead_letter(self, message: RabbitMessage, reason: str, attempt: int, event_type: str) -> None:
        log.error("event dead-lettered", error=reason, attempt=attempt, queue=self._topology.dead_letter_queue_name)
        await self._republish(
            message,
            self._topology.dead_letter_queue_name,
            {
                ATTEMPT_HEADER: attempt,
                ERROR_HEADER: reason,
                "x-spm-failed-at": datetime.now(UTC).isoformat(),
                "x-spm-queue": self._topology.queue_name,
            },
        )
        EVENTS_CONSUMED.labels(self._service, event_type, "dead_lettered").inc()

    async def _republish(self, message: RabbitMessage, queue: str, extra: dict[str, Any]) -> None:
        await self._broker.publish(
            message.body,
            routing_key=queue,
            persist=True,
            headers={**(message.headers or {}), **extra},
            content_type=message.content_type or CONTENT_TYPE,
            message_id=message.message_id,
            message_type=message.raw_message.type,
            correlation_id=message.correlation_id,
        )


def _raw_body(message: Any) -> bytes:
    """Hand the handler the body untouched; parsing and its failures belong to `on_message`."""
    return bytes(message.body)
