"""Every use of a library's private state, in one place: what each shortcut relies on, for which versions.

Two shortcuts hold measured gains (BENCHMARKS.md, bench/README.md): the relay writes a batch of publishes to
aiormq's channel in one socket write, with frames packed here, and the consumer takes deliveries from
aio-pika without FastStream's per-message pipeline. Both touch what the libraries do not promise to keep,
so the rest of the code calls only the functions below, the libraries are held below their next minor
release in libs/common/pyproject.toml, and libs/common/tests/test_internals.py fails, naming what is gone, when an
installed version no longer has what these functions use. Before raising a bound: read the new release's
`aiormq/channel.py` (`Channel.__init__`, `basic_publish`) and FastStream's `RabbitSubscriber.start`, then
run `libs/common/tests/test_internals.py`, `test_outbox_frames.py`, `test_outbox.py` and `test_consumer.py`.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from aiormq.abc import AbstractChannel, ChannelFrame
from faststream.rabbit.subscriber.usecase import RabbitSubscriber

from spm_common.envelope import CONTENT_TYPE

# The versions these shortcuts were written and measured against (uv.lock), and the first release they
# are not allowed to meet; libs/common/pyproject.toml carries the same bounds.
WRITTEN_FOR: dict[str, str] = {"aiormq": "7.2.4", "aio-pika": "10.2.1", "faststream": "0.7.8"}
BELOW: dict[str, str] = {"aiormq": "7.3", "aio-pika": "10.3", "faststream": "0.8"}

# What `write_publishes` uses of an open aiormq channel (`aiormq.Channel`): its lock (a property holding the
# private channel lock and refusing a closed channel), the confirm-mode bookkeeping `basic_publish` keeps
# (the last delivery tag, the future of each unconfirmed tag, which `Basic.Ack`/`Nack` settle), its number,
# the largest body frame the connection was tuned to, and the connection's write queue.
CHANNEL_ATTRIBUTES = (
    "lock",
    "delivery_tag",
    "create_future",
    "confirmations",
    "number",
    "max_content_size",
    "write_queue",
)

OnMessage = Callable[[AbstractIncomingMessage], Awaitable[None]]


# --- aiormq: a batch of publishes in one write ------------------------------------------------------------

# The AMQP 0-9-1 frames of one publish (a method, a content header, body frames), packed here rather than by
# pamqp's generic marshalling, which walks every property of the class and its type per message: ~21 -> ~3 µs
# an event, two events a contact message. A test holds them byte-equal to pamqp's.
_FRAME = struct.Struct(">BHI")  # type, channel, payload size; the payload; then the frame end octet
_METHOD, _HEADER, _BODY, _FRAME_END = 1, 2, 3, b"\xce"
_BASIC_PUBLISH = struct.pack(">HHH", 60, 40, 0)  # class Basic, method Publish, reserved ticket
_CONTENT = struct.Struct(">HHQH")  # class Basic, weight 0, body size, property flags
# The properties of CONTRACT section 3 (content-type, delivery-mode, message-id, type), in that order, and
# user-id after them where the publisher names its login (RabbitMQ refuses a user-id other than the
# connection's: the consumer learns who published, spm_common.publishers).
_PROPERTY_FLAGS = 0x8000 | 0x1000 | 0x0080 | 0x0020
_WITH_USER_ID = _PROPERTY_FLAGS | 0x0010
_PERSISTENT = bytes((aio_pika.DeliveryMode.PERSISTENT.value,))


def _short_string(text: str) -> bytes:
    data = text.encode()
    if len(data) > 255:
        raise TypeError("string exceeds maximum length of 255 bytes")  # as pamqp refuses it
    return bytes((len(data),)) + data


_CONTENT_TYPE = _short_string(CONTENT_TYPE)


def publish_frames(
    channel: int,
    exchange: str,
    event_type: str,
    event_id: str,
    body: bytes,
    max_content_size: int,
    routing_key: str | None = None,
    user_id: bytes = b"",
) -> bytes:
    """What `basic_publish` writes for one event: Basic.Publish to `exchange` with the routing key (the event
    type unless given: see `spm_common.envelope.OutboxRow`), not mandatory, not immediate; the content header
    with CONTRACT section 3's properties (persistent, `type` the event type) and, where given, `user_id`
    (packed once for a batch by `user_id_property`), and the body in frames of at most `max_content_size`
    bytes (none for an empty body)."""
    message_type = _short_string(event_type)
    key = message_type if routing_key is None or routing_key == event_type else _short_string(routing_key)
    method = b"".join((_BASIC_PUBLISH, _short_string(exchange), key, b"\x00"))
    properties = b"".join((_CONTENT_TYPE, _PERSISTENT, _short_string(event_id), message_type, user_id))
    flags = _WITH_USER_ID if user_id else _PROPERTY_FLAGS
    header = _CONTENT.pack(60, 0, len(body), flags) + properties
    parts = [
        _FRAME.pack(_METHOD, channel, len(method)),
        method,
        _FRAME_END,
        _FRAME.pack(_HEADER, channel, len(header)),
        header,
        _FRAME_END,
    ]
    for start in range(0, len(body), max_content_size):
        chunk = body[start : start + max_content_size]
        parts += (_FRAME.pack(_BODY, channel, len(chunk)), chunk, _FRAME_END)
    return b"".join(parts)


def user_id_property(user_id: str | None) -> bytes:
    """The packed `user_id` property for `publish_frames` (empty: none)."""
    return b"" if user_id is None else _short_string(user_id)


async def write_publishes(
    channel: AbstractChannel,
    exchange: str,
    messages: Sequence[tuple[str, str, bytes, str]],
    user_id: str | None = None,
) -> list[asyncio.Future[Any]]:
    """Queue a batch of (event_type, event_id, body, routing_key) on a confirm-mode aiormq channel for one socket write;
    return each message's confirmation future, in order (settled by the broker's ack or nack, cancelled if
    the channel closes first). Raises, with nothing queued, if the channel is closed. `user_id`: the login of
    the channel's connection, set on every message (another is refused by the broker).

    The frames of each message are exactly those `basic_publish` writes (`publish_frames`), and its delivery
    tag and confirmation are registered the same way under the channel's lock; only the write is one instead
    of one per message (each write is a system call that also runs the broker side of the loopback)."""
    underlay: Any = channel
    frames: list[bytes] = []
    confirmations: list[asyncio.Future[Any]] = []
    user = user_id_property(user_id)
    async with underlay.lock:
        for event_type, event_id, body, routing_key in messages:
            underlay.delivery_tag += 1
            confirmation = underlay.create_future()
            underlay.confirmations[underlay.delivery_tag] = confirmation
            confirmations.append(confirmation)
            frames.append(
                publish_frames(
                    underlay.number,
                    exchange,
                    event_type,
                    event_id,
                    body,
                    underlay.max_content_size,
                    routing_key,
                    user,
                )
            )
        await underlay.write_queue.put(ChannelFrame(payload=b"".join(frames), should_close=False))
    return confirmations


def missing_channel_attributes(channel: AbstractChannel) -> list[str]:
    """What `write_publishes` needs that this open aiormq channel lacks (nothing, on a version it was written for)."""
    return [name for name in CHANNEL_ATTRIBUTES if not hasattr(channel, name)]


# --- FastStream: deliveries straight from aio-pika -------------------------------------------------------


def deliver_directly(subscriber: RabbitSubscriber, on_message: OnMessage) -> None:
    """Have aio-pika hand each of the subscriber's deliveries to `on_message`, in place of FastStream's
    per-message pipeline (context scopes, middlewares, dependency injection, its message object), which cost
    more CPU than all of the consumer's own work per event. The subscriber still owns the channel with its
    prefetch, starts and cancels the consumer and documents it: `RabbitSubscriber.start` passes its
    `consume` attribute to `queue.consume`, and this replaces that attribute on the instance."""
    # Replaced on the instance on purpose (see above); its signature differs from FastStream's method.
    subscriber.consume = on_message  # type: ignore[method-assign,assignment]
