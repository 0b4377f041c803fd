"""Names and declaration of everything a service needs on RabbitMQ, in one place.

For a service `S` on exchange `X` (default `spm.events`):
- `X`: the topic exchange every integration event goes through (routing key = event type);
- `X.S`: S's durable quorum queue, bound to the event types S handles;
- `X.S.retry`: where a failing message waits `SPM_RETRY_DELAY_MS` (its own expiration, so the delay can
  change without redeclaring the queue) before it goes back to `X.S`;
- `X.S.dlq`: where a message ends, with its reason in headers, once it cannot be processed;
- `X.dlx`: the dead-letter exchange the broker itself uses for `X.S` (delivery limit, rejections);
- `X.S.requeue`: S's own direct exchange, bound to its three queues by their names: every copy S itself puts
  back (a retry, a dead letter, a replayed or listed dead letter) goes through it, so S's broker user needs no
  write on the default exchange or `X.dlx`, which would let it put a message into any queue.

`spm-admin bootstrap` declares all of it with the administrator's login (`declare`); a service only checks
at start that it exists (`ensure`), so its own user needs no right to configure anything. Only where nothing
has been declared yet and the service's user may (development, the tests: guest) does the service declare it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import aio_pika
from aiormq.exceptions import ChannelAccessRefused, ChannelNotFoundEntity
from faststream.rabbit import ExchangeType, QueueType, RabbitBroker, RabbitExchange, RabbitQueue

# Beyond this many deliveries (crashes while holding the message, failures of the failure path) the
# broker dead-letters the message itself, so nothing can loop forever.
DELIVERY_LIMIT = 20


@dataclass(frozen=True)
class Topology:
    exchange_name: str
    service: str

    @property
    def queue_name(self) -> str:
        return f"{self.exchange_name}.{self.service}"

    @property
    def retry_queue_name(self) -> str:
        return f"{self.queue_name}.retry"

    @property
    def dead_letter_queue_name(self) -> str:
        return f"{self.queue_name}.dlq"

    @property
    def dead_letter_exchange_name(self) -> str:
        return f"{self.exchange_name}.dlx"

    @property
    def requeue_exchange_name(self) -> str:
        return f"{self.queue_name}.requeue"

    @property
    def exchange(self) -> RabbitExchange:
        return RabbitExchange(self.exchange_name, type=ExchangeType.TOPIC, durable=True)

    @property
    def existing_exchange(self) -> RabbitExchange:
        """The exchange as a service's publishers see it: made by `declare`, so only looked up (passively)."""
        return RabbitExchange(self.exchange_name, type=ExchangeType.TOPIC, durable=True, declare=False)

    @property
    def dead_letter_exchange(self) -> RabbitExchange:
        return RabbitExchange(self.dead_letter_exchange_name, type=ExchangeType.DIRECT, durable=True)

    @property
    def requeue_exchange(self) -> RabbitExchange:
        return RabbitExchange(self.requeue_exchange_name, type=ExchangeType.DIRECT, durable=True)

    @property
    def consumer_queue(self) -> RabbitQueue:
        """The queue as the subscriber sees it: declared by `declare`, not by FastStream."""
        return RabbitQueue(self.queue_name, queue_type=QueueType.QUORUM, declare=False)

    def _main_arguments(self) -> dict[str, Any]:
        return {
            "x-dead-letter-exchange": self.dead_letter_exchange_name,
            "x-dead-letter-routing-key": self.dead_letter_queue_name,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
            "x-delivery-limit": DELIVERY_LIMIT,
        }

    def _retry_arguments(self) -> dict[str, Any]:
        return {
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.queue_name,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    async def declare(self, broker: RabbitBroker, routing_keys: Iterable[str]) -> None:
        """Idempotent. A queue that exists with other arguments makes the broker refuse (PRECONDITION_FAILED):
        delete it, or give the service another exchange, after changing the arguments here."""
        exchange = await broker.declare_exchange(self.exchange)
        keys = list(routing_keys)
        if not keys:
            return
        dlx = await broker.declare_exchange(self.dead_letter_exchange)
        queue = await broker.declare_queue(
            RabbitQueue(self.queue_name, queue_type=QueueType.QUORUM, arguments=cast(Any, self._main_arguments()))
        )
        retry = await broker.declare_queue(
            RabbitQueue(
                self.retry_queue_name,
                queue_type=QueueType.QUORUM,
                arguments=cast(Any, self._retry_arguments()),
            )
        )
        dlq = await broker.declare_queue(RabbitQueue(self.dead_letter_queue_name, queue_type=QueueType.QUORUM))
        await dlq.bind(dlx, routing_key=self.dead_letter_queue_name)
        requeue = await broker.declare_exchange(self.requeue_exchange)
        for own in (queue, retry, dlq):
            await own.bind(requeue, routing_key=own.name)
        for key in keys:
            await queue.bind(exchange, routing_key=key)

    async def missing(self, amqp_url: str, routing_keys: Iterable[str]) -> list[str]:
        """What of `declare`'s exchanges and queues does not exist, by name. Passive declarations: they need no
        permission but access to the vhost. (Bindings cannot be checked this way; `declare` makes them.)
        A connection of its own, not robust: a channel the broker closes must stay closed."""
        names: list[tuple[str, bool]] = [(self.exchange_name, True)]
        if list(routing_keys):
            names += [
                (self.dead_letter_exchange_name, True),
                (self.requeue_exchange_name, True),
                (self.queue_name, False),
                (self.retry_queue_name, False),
                (self.dead_letter_queue_name, False),
            ]
        absent = []
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            for name, is_exchange in names:
                # A missing one closes the channel: one channel each.
                channel = await connection.channel(publisher_confirms=False)
                try:
                    if is_exchange:
                        await channel.declare_exchange(name, passive=True)
                    else:
                        await channel.declare_queue(name, passive=True)
                except ChannelNotFoundEntity:
                    absent.append(name)
                    continue
                await channel.close()
        return absent

    async def ensure(self, broker: RabbitBroker, amqp_url: str, routing_keys: Iterable[str]) -> None:
        """At a service's start: nothing to do where everything exists (`spm-admin bootstrap` declared it, or
        an earlier start did), else `declare` it all, which only a user allowed to configure may (development,
        the tests); a service's own user is refused, and the error names what is missing."""
        keys = list(routing_keys)
        absent = await self.missing(amqp_url, keys)
        if not absent:
            return
        try:
            await self.declare(broker, keys)
        except ChannelAccessRefused as exc:
            raise TopologyMissing(absent) from exc


class TopologyMissing(RuntimeError):
    """The service's queues or exchanges do not exist and its broker user may not declare them."""

    def __init__(self, absent: list[str]) -> None:
        self.absent = absent
        super().__init__(
            f"RabbitMQ lacks {', '.join(absent)} and this service's broker user may not declare them: "
            "run `spm-admin bootstrap` (compose's db-init) with the administrator's login first"
        )
