"""A service's dead letters (its `.dlq` queue): list them without removing them, replay them to its queue, and
remove the ones about one person (an erasure, spm_common.privacy.DeadLetterEraser).

Shared by `spm-admin dlq list|replay` and each consuming service's operator endpoints (`/v1/dead-letters`),
so the console shows and replays dead letters through the service itself, with the service's own broker
user, and never needs rights on the broker of its own.
"""

from __future__ import annotations

import asyncio
import re
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, NamedTuple
from urllib.parse import unquote

import aio_pika
import asyncpg
import orjson
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage
from pydantic import BaseModel

from spm_common.addresses import normalise_address
from spm_common.publishers import DEFAULT_LOGIN, PUBLISHER_HEADER, amqp_login, carried, publisher_of
from spm_common.topology import Topology


class DeadLetter(BaseModel):
    """What an operator sees of a dead-lettered message: never its body (it may hold personal data)."""

    message_id: str | None
    type: str | None
    attempts: int | None
    reason: str | None
    failed_at: str | None


# Where the messages are read: an AMQP URL (a connection of its own, opened and closed: spm-admin), or the
# service's live connection (a channel of its own on it, closed after: the service's /v1/dead-letters). A new
# connection for every listing had cost each service ~5-15 ms of CPU and the broker more (the console's
# dead-letter page opened four at once: 340 ms p50 among a loaded machine's other work, bench.console).
Broker = str | Callable[[], Awaitable[AbstractConnection]]
# Where the queue's lock is taken (`LOCK`): the service's pool, or a database URL (spm-admin).
Database = asyncpg.Pool | str


async def list_dead_letters(amqp_url: Broker, topology: Topology, limit: int, database: Database) -> list[DeadLetter]:
    """Up to `limit` dead letters, oldest first, left in the queue.

    Each message shown goes back to the end of the queue as a copy, and the original is acknowledged.
    Returning it with a nack would count as a delivery: RabbitMQ 4 gives every quorum queue a delivery
    limit, and this queue has nowhere to dead-letter to, so listing it often enough would drop the
    messages. Listing at least the queue's length leaves the order as it was."""
    found: list[DeadLetter] = []

    async def show(message: AbstractIncomingMessage, channel: aio_pika.abc.AbstractChannel, login: str) -> None:
        found.append(_described(message))
        await _back_to_the_end(message, channel, topology, login)

    await _each_waiting(amqp_url, topology, limit, show, database)
    return found


async def replay_dead_letters(
    amqp_url: Broker, topology: Topology, limit: int, database: Database, message_id: str | None = None
) -> int:
    """Move dead letters (all, up to `limit`, or only the one with `message_id`) back to the service's queue
    for another round of attempts; returns how many moved. Others looked at on the way go back to the end of
    the dead-letter queue, as `list_dead_letters` leaves them."""
    moved = 0

    async def replay(message: AbstractIncomingMessage, channel: aio_pika.abc.AbstractChannel, login: str) -> None:
        nonlocal moved
        if message_id is not None and message.message_id != message_id:
            await _back_to_the_end(message, channel, topology, login)
            return
        headers = {k: v for k, v in (message.headers or {}).items() if not k.startswith("x-")}
        await (await requeue_exchange(channel, topology)).publish(
            copy_message(message, headers, login), routing_key=topology.queue_name
        )
        await message.ack()
        moved += 1

    await _each_waiting(amqp_url, topology, limit, replay, database)
    return moved


async def _each_waiting(amqp_url: Broker, topology: Topology, limit: int, handle: Any, database: Database) -> None:
    # Listing and replaying hold the messages they look at unacknowledged, out of an erasure's sight: they take
    # the queue's lock, as an erasure and the parking of old dead letters do, or an erasure running meanwhile
    # would leave behind the dead letters about its person that a listing held (and put back).
    async with _queue_held(database, topology.dead_letter_queue_name):
        if isinstance(amqp_url, str):
            connection = await aio_pika.connect(amqp_url)
            async with connection:
                await _each_on(connection, topology, limit, handle)
        else:
            await _each_on(await amqp_url(), topology, limit, handle)


@asynccontextmanager
async def _queue_held(database: Database, queue: str) -> AsyncIterator[None]:
    """Hold `LOCK` for `queue` in a transaction of its own for the duration of the block."""
    if isinstance(database, str):
        conn = await asyncpg.connect(database)
        try:
            async with conn.transaction():
                await conn.execute(LOCK, queue)
                yield
        finally:
            await conn.close()
    else:
        async with database.acquire() as pooled, pooled.transaction():
            await pooled.execute(LOCK, queue)
            yield


async def _each_on(connection: AbstractConnection, topology: Topology, limit: int, handle: Any) -> None:
    login = connection_login(connection)
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    async with channel:
        queue = await channel.get_queue(topology.dead_letter_queue_name, ensure=True)
        # Only what is waiting now: a message put back (or failing again at once) is not seen twice.
        waiting = queue.declaration_result.message_count or 0
        for _ in range(min(limit, waiting)):
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            await handle(message, channel, login)


async def _back_to_the_end(
    message: AbstractIncomingMessage, channel: aio_pika.abc.AbstractChannel, topology: Topology, login: str
) -> None:
    headers = {k: v for k, v in (message.headers or {}).items() if k != "x-delivery-count"}
    await (await requeue_exchange(channel, topology)).publish(
        copy_message(message, headers, login), routing_key=topology.dead_letter_queue_name
    )
    await message.ack()


async def requeue_exchange(channel: aio_pika.abc.AbstractChannel, topology: Topology) -> aio_pika.abc.AbstractExchange:
    """The service's own exchange to its queues (`Topology.requeue_exchange`), where every copy it puts back
    goes: its broker user may write to no exchange that routes by queue name but this one. Open `channel`
    with `on_return_raises=True`: a copy the broker cannot route (a binding missing) then raises, mandatory
    being aio-pika's default, instead of being confirmed and lost."""
    return await channel.get_exchange(topology.requeue_exchange_name, ensure=False)


def _described(message: AbstractIncomingMessage) -> DeadLetter:
    headers = message.headers or {}
    attempts = headers.get("x-spm-attempt")
    failed_at = headers.get("x-spm-failed-at")
    error = headers.get("x-spm-error")
    return DeadLetter(
        message_id=message.message_id,
        type=message.type,
        attempts=attempts if isinstance(attempts, int) else None,
        reason=str(error) if error else _death_reason(headers),
        failed_at=str(failed_at) if failed_at is not None else None,
    )


def copy_message(message: AbstractIncomingMessage, headers: dict[str, Any], login: str | None) -> aio_pika.Message:
    """A persistent copy of a message taken off a queue, with these headers: what goes back to a queue in its
    stead (the listing and the replay here, and the parking of old dead letters in spm_common.retention).

    `login` is the user the copy is published as: the copy carries it as its `user_id` and the message's
    publisher in its header (spm_common.publishers), so the publisher survives the copy; with no login, the
    copy says no publisher at all (and a consumer believes none)."""
    if login is None:
        headers = {k: v for k, v in headers.items() if k != PUBLISHER_HEADER}
    else:
        headers = {**headers, **carried(publisher_of(message.user_id, message.headers or {}, login))}
    return aio_pika.Message(
        message.body,
        headers=headers,
        user_id=login,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


# Removing the dead letters about one person ------------------------------------------------------------

# Messages taken off the queue, then settled, at a time: what a process holds in memory at once.
REMOVE_CHUNK = 500
# How long taking messages waits for one more before it settles for fewer than the queue had.
TAKE_IDLE_SECONDS = 1.0
# Held, in the transaction of the database that goes with the queue, by whatever takes a service's dead letters
# off its queue for a while (an erasure, the parking of old ones): a message another holds unacknowledged is
# invisible to the queue, so two of them at once could each miss what the other held (and an erasure would
# leave it behind). Keyed by the queue's name.
LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('spm-dlq:' || $1, 0))"
SESSION_LOCK = "SELECT pg_advisory_lock(hashtextextended('spm-dlq:' || $1, 0))"
SESSION_UNLOCK = "SELECT pg_advisory_unlock(hashtextextended('spm-dlq:' || $1, 0))"


class DeadLetterRemoval(NamedTuple):
    """What a pass over a dead-letter queue did: counts only, never content."""

    removed: int
    kept: int


def address_pattern(address: str) -> re.Pattern[str]:
    """An address, in the spelling addresses are compared in (`spm_common.addresses.normalise_address`), as it
    stands alone in text: not a part of a longer address (`ada@example.test` is not in `bada@example.test` nor
    in `ada@example.test.vn`)."""
    address = normalise_address(address)
    # Before it, only what real local parts are made of: the rarer characters RFC 5322 also allows there
    # (' = / ? & { | ...) are, in text, what quotes or delimits an address (`'ada@...'`, `?email=ada@...`).
    return re.compile(rf"(?<![\w.+-]){re.escape(address)}(?![\w-]|\.[\w-])")


def readable_text(message: AbstractIncomingMessage) -> str:
    """Everything of a message a person could be named in, as one text in the spelling addresses are compared
    in (NFC, lower case): the body (a JSON body's strings unescaped, so `\\u00e1` or `\\/` spell nothing
    else), every header value, and the ids and type; URL-encoded text decoded too (an unsubscribe link)."""
    parts: list[str] = []
    try:
        _strings(orjson.loads(message.body), parts)
    except orjson.JSONDecodeError:  # not JSON (nor UTF-8): its text as it is
        parts.append(message.body.decode("utf-8", "replace"))
    _strings(dict(message.headers or {}), parts)
    parts.extend(str(v) for v in (message.message_id, message.correlation_id, message.type, message.app_id) if v)
    text = "\n".join(parts)
    if "%" in text:
        text += "\n" + unquote(text)
    return unicodedata.normalize("NFC", text).lower()


def _strings(value: object, into: list[str], depth: int = 0) -> None:
    if depth > 50:
        return
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        into.append(value)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            into.append(str(key))
            _strings(item, into, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            _strings(item, into, depth + 1)
    elif value is not None:
        into.append(str(value))


def about_address(address: str) -> Callable[[AbstractIncomingMessage], bool]:
    """Whether a message names this address anywhere a person could read it (`readable_text`)."""
    pattern = address_pattern(address)
    return lambda message: pattern.search(readable_text(message)) is not None


async def remove_dead_letters(
    amqp_url: str, topology: Topology, doomed: Callable[[AbstractIncomingMessage], bool]
) -> DeadLetterRemoval:
    """Remove from a service's dead-letter queue every message `doomed` says must go; the others stay, in their order.

    RabbitMQ cannot delete one message from the middle of a queue: every message waiting now is taken off
    (unacknowledged, REMOVE_CHUNK at a time), the ones that stay are published again at the end of the queue
    in their order, each confirmed by the broker, and only then are all the originals acknowledged. So a
    crash or a lost connection at any point loses nothing: before the acknowledgements, every original comes
    back to the queue (the copies already published are then duplicates: a dead letter shown twice, which a
    replay makes harmless, as consumers are idempotent), and the removal can simply run again; a message to
    remove is gone only once its acknowledgement reached the broker. Never a nack: that counts as a delivery
    against the quorum queue's delivery limit (see `list_dead_letters`).

    Only what waits when it starts is looked at: a message dead-lettered meanwhile stays where it arrives
    (before the copies). Callers hold `LOCK` so that no other taker hides messages from this one."""
    removed = kept = 0
    queue_name = topology.dead_letter_queue_name
    login = amqp_login(amqp_url)
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        requeue = await requeue_exchange(channel, topology)
        queue = await channel.declare_queue(queue_name, passive=True)
        waiting = queue.declaration_result.message_count or 0
        while waiting > 0:
            wanted = min(REMOVE_CHUNK, waiting)
            taken = await _take(channel, queue, wanted)
            if not taken:
                break
            # Fewer than counted (a replay took some meanwhile): this chunk is the last.
            waiting = waiting - wanted if len(taken) >= wanted else 0
            staying = [m for m in taken if not doomed(m)]
            # Overlapped: one confirmation (a quorum queue's disk write) at a time made it ~100 messages/s.
            # Started in order, the publishes reach the broker in order: each takes the channel's lock, which
            # is first come first served, before anything else it waits for (test_dead_letter_erasure checks
            # the order with more messages than this can reorder by chance).
            await asyncio.gather(*(requeue.publish(_without_count(m, login), routing_key=queue_name) for m in staying))
            # Every copy is confirmed: now, and only now, the originals go (all of this channel's, at once).
            await taken[-1].ack(multiple=True)
            removed += len(taken) - len(staying)
            kept += len(staying)
    return DeadLetterRemoval(removed=removed, kept=kept)


async def _take(
    channel: aio_pika.abc.AbstractChannel, queue: aio_pika.abc.AbstractQueue, wanted: int
) -> list[AbstractIncomingMessage]:
    """Up to `wanted` messages from the head of the queue, unacknowledged, in the queue's order.

    A consumer allowed `wanted` unacknowledged messages, rather than one basic.get each: a quorum queue
    answers a get in about 4 ms, and streams to a consumer. Once it holds `wanted`, the broker sends no more,
    so none is in flight when the consumer is cancelled; if fewer come (taken by someone else meanwhile), it
    stops after TAKE_IDLE_SECONDS without one."""
    await channel.set_qos(prefetch_count=wanted)
    taken: list[AbstractIncomingMessage] = []
    arrived = asyncio.Event()

    async def on_message(message: AbstractIncomingMessage) -> None:
        taken.append(message)
        arrived.set()

    tag = await queue.consume(on_message, no_ack=False)
    try:
        while True:
            arrived.clear()
            if len(taken) >= wanted:
                break
            try:
                async with asyncio.timeout(TAKE_IDLE_SECONDS):
                    await arrived.wait()
            except TimeoutError:
                break
    finally:
        await queue.cancel(tag)
    # A delivery that raced the cancellation has had its callback scheduled by now: let it run. (One missed
    # all the same is not acknowledged below, so it goes back to the queue with the connection, not lost.)
    await asyncio.sleep(0.05)
    return sorted(taken, key=lambda m: m.delivery_tag or 0)


def _without_count(message: AbstractIncomingMessage, login: str) -> aio_pika.Message:
    # The copy is a message of its own, not this one delivered again.
    return copy_message(message, {k: v for k, v in (message.headers or {}).items() if k != "x-delivery-count"}, login)


def connection_login(connection: AbstractConnection) -> str:
    """The user an aio-pika connection logged in as (its URL's)."""
    url = getattr(connection, "url", None)
    return str(url.user) if url is not None and url.user else DEFAULT_LOGIN


def _death_reason(headers: Mapping[str, object]) -> str | None:
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        return f"broker: {deaths[0].get('reason')}"
    return None
