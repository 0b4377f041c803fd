"""Names and declaration of everything a service needs on RabbitMQ, in one place.

For a service `S` on exchange `X` (default `spm.events`):
- `X`: the topic exchange every integration event goes through (routing key = event type);
- `X.S`: S's durable quorum queue, bound to the event types S handles;
- `X.S.retry`: where a failing message waits `SPM_RETRY_DELAY_MS` (its own expiration, so the delay can
  change without redeclaring the queue) before it goes back to `X.S`;
- `X.S.dlq`: where a message ends, with its reason in headers, once it cannot be processed;
- `X.dlx`: the dead-letter exchange the broker itself uses for `X.S` (delivery limit, rejections).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

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
    def exchange(self) -> RabbitExchange:
        return RabbitExchange(self.exchange_name, type=ExchangeType.TOPIC, durable=True)

    @property
    def dead_letter_exchange(self) -> RabbitExchange:
        return RabbitExchange(self.dead_letter_exchange_name, type=ExchangeType.DIRECT, durable=True)

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
        await broker.declare_queue(
            RabbitQueue(
                self.retry_queue_name,
                queue_type=QueueType.QUORUM,
                arguments=cast(Any, self._retry_arguments()),
            )
        )
        dlq = await broker.declare_queue(RabbitQueue(self.dead_letter_queue_name, queue_type=QueueType.QUORUM))
        await dlq.bind(dlx, routing_key=self.dead_letter_queue_name)
        for key in keys:
            await queue.bind(exchange, routing_key=key)
