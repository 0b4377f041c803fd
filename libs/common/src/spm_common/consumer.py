"""The idempotent consumer: every service takes its events through here.

Each delivery's envelope is validated, then its `data` into the payload model its handler names (the
service's `Handlers`, spm_common.handlers): handlers receive typed payloads, and a payload that does not
validate goes to the dead-letter queue at once, with the reason, before it reaches a transaction.

Messages are taken in batches (whatever arrived while the previous batch was being written, and for
`SPM_CONSUMER_LINGER_MS` more unless the batch is full, up to `SPM_CONSUMER_BATCH`): one transaction records
every (source, id) in the service's inbox and runs the handler of each event seen for the first time, then
every message is acknowledged. A redelivered event finds its row in the inbox and has no second effect. If a
batch fails, its messages are processed one by one, so only the failing message meets the failure path:

- a message that cannot be valid (bad JSON, not a CloudEvent, a payload its model refuses, a handler's
  `PermanentError` or pydantic `ValidationError`) goes to the dead-letter queue at once, with its reason in
  the `x-spm-error` header;
- any other error sends a copy to the retry queue, back after `SPM_RETRY_DELAY_MS`, until
  `SPM_MAX_ATTEMPTS`, then to the dead-letter queue.

Each delivery's publisher, the RabbitMQ user the broker vouches for (`user_id`), reaches the handlers in
`Meta.publisher`; the retry and dead-letter copies, published by the service's own login (`login`), carry it
in a header that only the service's own copies are believed for (spm_common.publishers).

A service may pass `scrub`, applied to each delivery's body, ids and header values before anything else
looks at them: the inbox, the handlers, the logs and every copy sent to the retry or dead-letter queue see
only what it returns (the orders service removes card data this way).

The original is acknowledged only after its copy is confirmed, so a crash at any point leaves it in
RabbitMQ. Should the failure path itself fail, the message is requeued, and the queue's delivery limit
dead-letters it at the broker: nothing loops forever, nothing is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aio_pika.abc import AbstractIncomingMessage
from aiormq import spec
from faststream import AckPolicy
from faststream.rabbit import RabbitBroker, RabbitMessage
from pydantic import ValidationError

from spm_common.db import Connection
from spm_common.envelope import ACCEPTED_CONTENT_TYPES, CONTENT_TYPE, CloudEvent, Payload
from spm_common.handlers import Handlers, Meta, Received, Route
from spm_common.health import LoopHealth
from spm_common.internals import deliver_directly
from spm_common.logging import bound_contextvars, get_logger
from spm_common.metrics import EVENTS_CONSUMED
from spm_common.publishers import carried, publisher_of
from spm_common.redaction import describe_error
from spm_common.topology import Topology

log = get_logger(__name__)

Scrub = Callable[[bytes], bytes]
ATTEMPT_HEADER = "x-spm-attempt"
ERROR_HEADER = "x-spm-error"
# A copy to the retry or dead-letter queue that the broker never confirms must not hold the consumer: the
# original is requeued instead (see `_settle`).
REPUBLISH_TIMEOUT_SECONDS = 10.0


class PermanentError(Exception):
    """Raised by a handler for a message that no retry can fix: it goes to the dead-letter queue at once."""


@dataclass(eq=False, slots=True)
class _Delivery:
    """What the consumer keeps of one delivery: its content as the service's scrubber left it (this copy, not
    the original, goes to the retry and dead-letter queues), and the broker's message to acknowledge."""

    body: bytes
    headers: dict[str, Any]
    content_type: str | None
    message_id: str | None
    correlation_id: str | None
    type: str | None
    raw: AbstractIncomingMessage
    # Who published it, as the broker vouches (`publisher_of`): what its retry and dead-letter copies carry on.
    publisher: str | None = None


@dataclass(eq=False, slots=True)
class _Item:
    event: CloudEvent
    message: _Delivery
    attempt: int
    # The event concerns this service (`accepts`); else it is acknowledged with its batch and nothing else.
    wanted: bool = True
    route: Route[Any] | None = None  # Any: a batch holds events of every type
    # Made on arrival for an event with a route (only its handler needs them). `payload` is validated once;
    # None, with `invalid` set, when the route keeps an invalid payload.
    meta: Meta | None = None
    payload: Payload | None = None
    invalid: ValidationError | None = None


class EventConsumer:
    def __init__(
        self,
        *,
        service: str,
        broker: RabbitBroker,
        topology: Topology,
        handlers: Handlers,
        pool: Callable[[], asyncpg.Pool],
        max_attempts: int,
        retry_delay_ms: int = 5000,
        batch_size: int = 50,
        linger_ms: int = 0,
        scrub: Scrub | None = None,
        accepts: Callable[[CloudEvent], bool] | None = None,
        health: LoopHealth | None = None,
        login: str | None = None,
    ) -> None:
        self._service = service
        # The RabbitMQ user the broker connection logs in as: its copies carry it as their `user_id`.
        self._login = login
        self._health = health or LoopHealth(service, "consumer")
        self._scrub = scrub
        # Events bound to the queue that concern another service (the routing key is only the event type):
        # acknowledged with their batch, with no inbox row and no handler.
        self._accepts = accepts
        # Deliveries dead-lettered on arrival whose copy is still on its way; each is acknowledged on its own.
        self._settling: set[int] = set()
        self._broker = broker
        self._topology = topology
        self._requeue = topology.requeue_exchange
        self._handlers = handlers
        self._routes = dict(handlers.routes)
        self._every = handlers.every
        self._pool = pool
        self._max_attempts = max_attempts
        self._retry_delay = retry_delay_ms / 1000
        self._batch_size = batch_size
        self._linger = linger_ms / 1000
        self._pending: list[_Item] = []
        self._arrived = asyncio.Event()
        self._full = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._task: asyncio.Task[None] | None = None
        subscriber = broker.subscriber(
            topology.consumer_queue,
            ack_policy=AckPolicy.MANUAL,
            title=f"{topology.queue_name}:consume",
            description=f"{service} consumes: {', '.join(handlers.bindings())}",
        )
        subscriber(_documented)
        # FastStream's subscriber declares nothing here (the topology does), owns the channel with its prefetch,
        # starts and cancels the consumer and documents it; each delivery, though, goes straight from aio-pika
        # to `on_message`: FastStream's per-message pipeline (context scopes, middlewares, dependency
        # injection, its message object) cost more CPU than all of this consumer's own work per event.
        deliver_directly(subscriber, self.on_message)

    @property
    def routing_keys(self) -> list[str]:
        return self._handlers.bindings()

    @property
    def handlers(self) -> Handlers:
        return self._handlers

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self._service}-consumer")

    async def stop(self) -> None:
        """Call after the broker stopped delivering: what is pending is processed, or comes back later."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def on_message(self, raw: AbstractIncomingMessage) -> None:
        """Called for each delivery, in order; never raises (acknowledgement is manual)."""
        message = _delivery(raw, self._scrub)
        message.publisher = publisher_of(raw.user_id, raw.headers or {}, self._login)
        body = message.body
        attempt = _int(message.headers.get(ATTEMPT_HEADER), 1)
        try:
            # A message without the property arrives as None; the envelope in the body still decides.
            if (message.content_type or "") not in ACCEPTED_CONTENT_TYPES:
                raise ValueError(f"unsupported content type {str(message.content_type)[:100]!r}")
            event = CloudEvent.parse(body)
        except (ValidationError, ValueError) as exc:
            await self._reject(message, describe_error(exc), attempt, "?")
            return
        item = _Item(event, message, attempt)
        if self._accepts is not None and not self._accepts(event):
            item.wanted = False
        else:
            route = item.route = self._routes.get(event.type)
            if route is not None:
                item.meta = Meta.of(event, message.publisher)
                try:
                    # The one validation of the payload: the handler receives it as it is.
                    item.payload = route.model.model_validate(event.data)
                except ValidationError as exc:
                    if route.on_invalid is None:
                        with bound_contextvars(
                            event_id=event.id, event_type=event.type, correlation_id=event.correlationid
                        ):
                            await self._reject(message, describe_error(exc), attempt, event.type)
                        return
                    item.invalid = exc
        await self._room.wait()
        self._pending.append(item)
        if len(self._pending) >= self._batch_size:
            self._room.clear()
            self._full.set()
        self._arrived.set()

    async def _reject(self, message: _Delivery, reason: str, attempt: int, event_type: str) -> None:
        """Dead-letter a delivery that can never be processed, as soon as it arrives."""
        tag = message.raw.delivery_tag or 0
        self._settling.add(tag)
        try:
            await self._settle(message, self._dead_letter(message, reason, attempt, event_type))
        finally:
            self._settling.discard(tag)

    async def _run(self) -> None:
        while True:
            await self._arrived.wait()
            if self._linger and not self._full.is_set():
                # At a steady rate, what arrives in the next few ms would otherwise be a transaction of its own
                # each time (figures at `consumer_linger_ms` in settings).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self._linger)
            batch, self._pending = self._pending[: self._batch_size], self._pending[self._batch_size :]
            if not self._pending:
                self._arrived.clear()
            if len(self._pending) < self._batch_size:
                self._full.clear()
            self._room.set()
            try:
                await self._process(batch)
            except Exception as exc:  # the failure path failed (broker away): they come back on reconnect
                log.error("batch left unacknowledged", error=describe_error(exc), count=len(batch))
                self._health.failed(describe_error(exc))

    async def _process(self, batch: list[_Item]) -> None:
        wanted = [item for item in batch if item.wanted]
        try:
            fresh = await self._apply(wanted) if wanted else set()
        except Exception as exc:
            if len(batch) == 1:
                self._health.failed(describe_error(exc))
                await self._fail(batch[0], exc)
            else:
                for item in batch:
                    await self._process([item])
            return
        self._health.ok()
        outcome = {id(item): "processed" if id(item) in fresh else "duplicate" for item in wanted}
        counts = Counter((item.event.type, outcome.get(id(item), "ignored")) for item in batch)
        for (event_type, result), count in counts.items():
            EVENTS_CONSUMED.labels(self._service, event_type, result).inc(count)
        if log.is_enabled_for(logging.INFO):  # asked once a batch: binding and logging per event is not free
            for item in wanted:
                with bound_contextvars(
                    event_id=item.event.id, event_type=item.event.type, correlation_id=item.event.correlationid
                ):
                    log.info("event processed" if id(item) in fresh else "event duplicate", attempt=item.attempt)
        last = batch[-1].message.raw.delivery_tag or 0
        if any(tag < last for tag in self._settling):
            # Deliveries arrive concurrently: acknowledging everything up to here would acknowledge a dead
            # letter before its copy is confirmed, and its own acknowledgement would then be a second one,
            # which closes the channel (every unacknowledged delivery comes back, some dead-lettered twice).
            for item in batch:
                await _ack(item.message)
        else:
            await _ack_through(batch[-1].message)

    async def _apply(self, batch: list[_Item]) -> set[int]:
        """One transaction: record the batch in the inbox, run the handlers of first-seen events."""
        async with self._pool().acquire() as conn, conn.transaction():
            keys = {(i.event.source, i.event.id): i for i in reversed(batch)}  # first occurrence wins
            rows = await conn.fetch(
                "INSERT INTO inbox (source, event_id, event_type)"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::text[])"
                " ON CONFLICT DO NOTHING RETURNING source, event_id",
                [k[0] for k in keys],
                [k[1] for k in keys],
                [i.event.type for i in keys.values()],
            )
            position = {id(item): n for n, item in enumerate(batch)}
            fresh = sorted((keys[(r["source"], r["event_id"])] for r in rows), key=lambda i: position[id(i)])
            await self._dispatch(conn, fresh)
        return {id(item) for item in fresh}

    async def _dispatch(self, conn: Connection, items: list[_Item]) -> None:
        """Run the handlers of a batch's first-seen events, in order; a batch handler takes the consecutive
        events of its type in one call."""
        if self._every is not None and items:
            await self._every(conn, [item.event for item in items])
        run: list[Received[Any]] = []
        run_route: Route[Any] | None = None
        for item in items:
            route, meta = item.route, item.meta
            if route is None or meta is None:
                if self._every is None:
                    log.warning("no handler for event type; acknowledged", event_type=item.event.type)
                continue
            if route.many is not None and item.payload is not None:
                if run and route is not run_route:
                    await _run_batch(conn, run_route, run)
                    run = []
                run_route = route
                run.append(Received(item.payload, meta))
                continue
            if run:
                await _run_batch(conn, run_route, run)
                run = []
            with bound_contextvars(
                event_id=item.event.id, event_type=item.event.type, correlation_id=item.event.correlationid
            ):
                if item.invalid is not None and route.on_invalid is not None:
                    route.on_invalid(meta, item.invalid)
                elif route.one is not None:
                    await route.one(conn, item.payload, meta)
        if run:
            await _run_batch(conn, run_route, run)

    async def _fail(self, item: _Item, exc: Exception) -> None:
        """The failure path of one message whose own transaction failed with `exc`."""
        reason = describe_error(exc)
        permanent = isinstance(exc, PermanentError | ValidationError)
        with bound_contextvars(
            event_id=item.event.id, event_type=item.event.type, correlation_id=item.event.correlationid
        ):
            if permanent or item.attempt >= self._max_attempts:
                action = self._dead_letter(item.message, reason, item.attempt, item.event.type)
            else:
                action = self._retry(item.message, reason, item.attempt, item.event.type)
            await self._settle(item.message, action)

    async def _settle(self, message: _Delivery, action: Awaitable[None]) -> None:
        try:
            await action
        except Exception as exc:
            log.error("failure path failed; message requeued", error=describe_error(exc))
            with contextlib.suppress(Exception):
                await message.raw.nack(requeue=True)
            return
        await _ack(message)

    async def _retry(self, message: _Delivery, reason: str, attempt: int, event_type: str) -> None:
        log.warning("event failed, will retry", error=reason, attempt=attempt)
        await self._republish(
            message,
            self._topology.retry_queue_name,
            {ATTEMPT_HEADER: attempt + 1, ERROR_HEADER: reason},
            expiration=self._retry_delay,
        )
        EVENTS_CONSUMED.labels(self._service, event_type, "retried").inc()

    async def _dead_letter(self, message: _Delivery, reason: str, attempt: int, event_type: str) -> None:
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

    async def _republish(
        self, message: _Delivery, queue: str, extra: dict[str, Any], expiration: float | None = None
    ) -> None:
        # Through the service's own exchange (Topology.requeue_exchange): its user may write nowhere else that
        # routes by queue name. Mandatory: a copy the broker cannot route comes back instead of a confirmation.
        confirmation = await self._broker.publish(
            message.body,
            exchange=self._requeue,
            routing_key=queue,
            persist=True,
            expiration=expiration,
            # Published by the service's own login: the copy says who published the original (never what a
            # header of the original claimed: `publisher_of` decided that already).
            headers={**message.headers, **extra, **carried(message.publisher)},
            user_id=self._login,
            content_type=message.content_type or CONTENT_TYPE,
            message_id=message.message_id,
            message_type=message.type,
            correlation_id=message.correlation_id,
            timeout=REPUBLISH_TIMEOUT_SECONDS,
            mandatory=True,
        )
        if not isinstance(confirmation, spec.Basic.Ack):  # returned unroutable, or refused: the original stays
            raise RuntimeError(f"copy to {queue} not routed")


async def _run_batch(conn: Connection, route: Route[Any] | None, run: list[Received[Any]]) -> None:
    if route is not None and route.many is not None:
        await route.many(conn, run)


def _delivery(raw: AbstractIncomingMessage, scrub: Scrub | None) -> _Delivery:
    """The delivery's content, scrubbed when the service scrubs; if the scrubber fails, nothing of it."""
    headers = dict(raw.headers or {})
    if scrub is None:
        return _Delivery(raw.body, headers, raw.content_type, raw.message_id, raw.correlation_id, raw.type, raw)
    try:
        return _Delivery(
            scrub(raw.body),
            _scrubbed(headers, scrub),
            raw.content_type,
            _scrubbed(raw.message_id, scrub),
            _scrubbed(raw.correlation_id, scrub),
            _scrubbed(raw.type, scrub),
            raw,
        )
    except Exception as exc:
        log.error("scrubbing failed; the message is dead-lettered without content", error=describe_error(exc))
        return _Delivery(b"", {}, raw.content_type, "", "", None, raw)


_NOT_DIGITS = bytes(b for b in range(256) if not 48 <= b <= 57)


def _holds_nothing(raw: bytes) -> bool:
    """True when no scrubber could find anything in `raw`: ASCII, fewer than 13 digits, no JSON object (whose
    field names may say card data) and no escape. The names and values of the broker's own headers (x-death's
    queue names, times, counts), a dozen on a retried message, are decided here in C, not parsed each."""
    return raw.isascii() and b"{" not in raw and b"\\" not in raw and len(raw.translate(None, _NOT_DIGITS)) < 13


def _scrubbed(value: Any, scrub: Scrub | None, depth: int = 0) -> Any:  # an AMQP field value: any of its types
    """A header or property value scrubbed: text and bytes, and the names and values of the tables and arrays
    a header may nest (a dead letter carries them all on)."""
    if scrub is None:
        return value
    if isinstance(value, bytes):
        return value if _holds_nothing(value) else scrub(value)
    if isinstance(value, str):
        raw = value.encode("utf-8", "surrogateescape")
        return value if _holds_nothing(raw) else scrub(raw).decode("utf-8", "surrogateescape")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**12:  # 13 digits or more
        text = str(value)
        cleaned = _scrubbed(text, scrub)
        return value if cleaned == text else cleaned
    if depth > 20:  # deeper than any header anyone means: nothing of it
        return None
    if isinstance(value, dict):
        return {_scrubbed(str(k), scrub): _scrubbed(v, scrub, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(v, scrub, depth + 1) for v in value]
    return value


async def _ack(message: _Delivery) -> None:
    try:
        await message.raw.ack()
    except Exception as exc:  # the channel died: the broker redelivers, the inbox absorbs the duplicate
        log.warning("acknowledgement failed", error=describe_error(exc))


async def _ack_through(message: _Delivery) -> None:
    """Acknowledge `message` and every earlier delivery of its channel in one frame: a batch is acked
    together, and everything before it has been acknowledged or settled already."""
    try:
        await message.raw.ack(multiple=True)
    except Exception as exc:  # the channel died: the broker redelivers, the inbox absorbs the duplicates
        log.warning("acknowledgement failed", error=describe_error(exc))


def _int(value: object, default: int) -> int:
    try:
        return int(str(value)) if value is not None else default
    except ValueError:
        return default


async def _documented(message: RabbitMessage) -> None:
    """The subscriber's handler as the AsyncAPI document shows it; deliveries go to `EventConsumer.on_message`."""
