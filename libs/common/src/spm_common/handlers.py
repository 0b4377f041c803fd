"""A service's handlers, keyed by the payload model each one takes: the one place that says what it consumes.

Each service's `handlers.py` builds a `Handlers` (its dependencies, such as settings, bound in): the consumer
validates each event's `data` into the model its handler names before calling it, so a handler receives a
typed payload and the envelope's `Meta`, and never parses anything itself. A payload that does not validate
is dead-lettered with the reason, unless the route says what else becomes of it (`on_invalid`). The same
registry gives the queue's bindings and the `receive` half of the service's AsyncAPI document.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, NamedTuple, TypeVar

from pydantic import ValidationError

from spm_common.cards import MARKER
from spm_common.db import Connection
from spm_common.envelope import CloudEvent, Payload, Purpose

P = TypeVar("P", bound=Payload)


@dataclass(frozen=True, slots=True)
class Meta:
    """What a handler may need of an event besides its payload: the envelope's attributes, never `data`."""

    id: str
    type: str
    source: str
    time: datetime | None
    correlationid: str | None
    purpose: Purpose | None
    subject: str | None
    # What the service's scrubber removed from the delivery (`spmscrubbed`), as it arrived: it came from the
    # outside, so whoever reads it checks it (cards.marker_findings).
    scrubbed: object = None
    # The RabbitMQ user that published the event, as the broker vouches for it (the validated `user_id`,
    # carried through the service's own retries: spm_common.publishers); None when nothing vouches for one.
    publisher: str | None = None

    @classmethod
    def of(cls, event: CloudEvent, publisher: str | None = None) -> Meta:
        extra = event.__pydantic_extra__
        return cls(
            event.id,
            event.type,
            event.source,
            event.time,
            event.correlationid,
            event.purpose,
            event.subject,
            extra.get(MARKER) if extra else None,
            publisher,
        )


class Received(NamedTuple, Generic[P]):
    """One event as a batch handler receives it."""

    payload: P
    meta: Meta


Handler = Callable[[Connection, P, Meta], Awaitable[None]]
# Takes the consecutive events of its type in a batch in one call (one statement for many rows).
BatchHandler = Callable[[Connection, Sequence[Received[P]]], Awaitable[None]]
# Sees every event the service takes, as it arrived, before the typed handlers (the audit's trail).
EveryHandler = Callable[[Connection, Sequence[CloudEvent]], Awaitable[None]]
# Instead of dead-lettering: told, inside the batch's transaction, of a payload that does not validate.
OnInvalid = Callable[[Meta, ValidationError], None]


@dataclass(frozen=True, slots=True, eq=False)
class Route(Generic[P]):
    model: type[P]
    routing_key: str
    one: Handler[P] | None = None
    many: BatchHandler[P] | None = None
    on_invalid: OnInvalid | None = None


class Handlers:
    """Payload model -> handler, one per event type (the model's `event_type`)."""

    def __init__(self, *, every: EveryHandler | None = None) -> None:
        # Any: routes of every payload type live in one table; each was typed when it was added.
        self._routes: dict[str, Route[Any]] = {}
        self.every = every

    def on(
        self,
        model: type[P],
        handler: Handler[P],
        *,
        routing_key: str | None = None,
        on_invalid: OnInvalid | None = None,
    ) -> Handlers:
        """`handler(conn, payload, meta)` for each event of `model`'s type; `routing_key` where the queue binds
        another key than the type (the notifier's outcomes)."""
        return self._add(Route(model, routing_key or model.event_type, one=handler, on_invalid=on_invalid))

    def on_batch(
        self,
        model: type[P],
        handler: BatchHandler[P],
        *,
        routing_key: str | None = None,
        on_invalid: OnInvalid | None = None,
    ) -> Handlers:
        """`handler(conn, [Received(payload, meta), ...])` for consecutive events of `model`'s type."""
        return self._add(Route(model, routing_key or model.event_type, many=handler, on_invalid=on_invalid))

    def _add(self, route: Route[Any]) -> Handlers:
        event_type = route.model.event_type
        if event_type in self._routes:
            raise ValueError(f"{event_type} has a handler already")
        self._routes[event_type] = route
        return self

    @property
    def routes(self) -> Mapping[str, Route[Any]]:
        return self._routes

    @property
    def consumes(self) -> dict[str, type[Payload]]:
        """Event type -> the payload model it is validated into."""
        return {event_type: route.model for event_type, route in self._routes.items()}

    @property
    def routing_keys(self) -> dict[str, str]:
        """Event type -> the routing key the queue binds for it, where that is not the type."""
        return {t: r.routing_key for t, r in self._routes.items() if r.routing_key != t}

    def bindings(self) -> list[str]:
        """Every routing key the service's queue binds (`#` when it sees every event)."""
        if self.every is not None:
            return [EVERY_EVENT]  # the typed routes' keys are in it
        return sorted({route.routing_key for route in self._routes.values()})

    def __bool__(self) -> bool:
        return bool(self._routes) or self.every is not None


EVERY_EVENT = "#"
