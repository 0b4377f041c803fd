"""The transactional outbox: an event is written in the transaction of the state change it reports, and a
relay publishes it afterwards, so a state change never goes unannounced and nothing is announced that did
not happen.

The relay wakes on LISTEN/NOTIFY (the notification arrives only at commit) and polls as a fallback; it
claims a batch with FOR UPDATE SKIP LOCKED (so replicas share the work), publishes the batch with
overlapping publisher confirms, marks the confirmed rows sent and commits. When more rows wait (the batch
was full, or a notification came meanwhile), the next batch is claimed while the one before still awaits its
confirmations. While the broker is away it
backs off and tries again; the rows wait in Postgres.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, NamedTuple, TypeVar

import aio_pika
import asyncpg
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aiormq import spec

from spm_common.db import INDEX_SCAN_CLAIM, Connection
from spm_common.envelope import CONTENT_TYPE, CloudEvent, OutboxRow
from spm_common.health import LoopHealth
from spm_common.internals import write_publishes
from spm_common.logging import get_logger
from spm_common.metrics import EVENTS_PUBLISH_FAILED, EVENTS_PUBLISHED, OUTBOX_BACKLOG
from spm_common.pgnotify import Listener
from spm_common.redaction import describe_error

log = get_logger(__name__)

Publish = Callable[[str, str, bytes, str], Awaitable[object]]  # (event_type, event_id, body, routing_key)
# A batch of (event_type, event_id, body, routing_key) at once, calling the second argument once the messages
# are written; a result per message: its confirmation or its exception.
PublishMany = Callable[[Sequence[tuple[str, str, bytes, str]], Callable[[], None]], Awaitable[Sequence[object]]]

# Told, in the purge's transaction, how many published rows it deleted and from before when (the audit
# trail's `retention.purged`, spm_common.retention).
OnPurged = Callable[[Connection, int, datetime], Awaitable[None]]

PURGE_EVERY_SECONDS = 3600.0
# Published rows deleted by one statement at most: at 1,000 orders/s an hour's worth is millions of rows,
# which as one DELETE would be one long transaction (and hold the relay's loop until it ended).
PURGE_BATCH = 10_000
PURGE = (
    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE published_at < now() - make_interval(secs => $1)"
    " ORDER BY published_at LIMIT $2)"
)
# A batch on a table autovacuum is behind on may take longer than the pool's statement timeout allows.
PURGE_TIMEOUT_SECONDS = 120.0
MAX_BACKOFF_SECONDS = 30.0
BACKLOG_TIMEOUT_SECONDS = 1.0


def channel_name(schema: str) -> str:
    """The LISTEN/NOTIFY channel; NOTIFY spells the same name in SQL."""
    return f"spm_outbox_{schema}"


# How a service writes events: `add` and `add_many` in the transaction of the state change, or, where one round
# trip matters, `InStatement` in the very statement of the state change. This module alone spells the table,
# its columns and its wake-up channel (the relay and the purges below read them).

Event = CloudEvent | OutboxRow

# The wake-up, delivered at commit, for the relay listening on `channel_name(schema)`.
NOTIFY = "pg_notify('spm_outbox_' || current_schema(), '')"
_COLUMNS = "event_id, event_type, body, routing_key"
_ADD = (
    f"WITH added AS (INSERT INTO outbox ({_COLUMNS})"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[]))"
    f" SELECT {NOTIFY}"
)


async def add(conn: Connection, event: Event) -> None:
    """Add an event to the outbox of the connection's schema; call inside the state change's transaction."""
    await add_many(conn, (event,))


async def add_many(conn: Connection, events: Iterable[Event]) -> None:
    """Add events to the outbox, in their order, in one round trip (nothing when there are none); call inside
    the state change's transaction."""
    rows = [_row(e) for e in events]
    if rows:
        await conn.execute(_ADD, *_arrays(rows, routed=True))


K = TypeVar("K")


class Keyed(NamedTuple, Generic[K]):
    """An event that belongs to a row the statement may or may not write (`InStatement.kept`)."""

    key: K
    event: Event


@dataclass(frozen=True)
class InStatement:
    """The outbox's part of a service's own statement, for hot paths where one round trip matters: the
    statement writes its state change and its events at once, and no service spells the outbox.

        EVENTS = InStatement(first=4)
        SQL = f"WITH change AS (...), events AS ({EVENTS.insert}) SELECT {EVENTS.notify}"
        await conn.execute(SQL, a, b, c, *EVENTS.args(events))

    `first` is the number of the part's first placeholder: its parameters come after the statement's own.
    With `kept` (a query of the statement returning keys, `SELECT id FROM recorded`) and the keys' SQL type
    `key`, each event carries a key (`Keyed`, `keyed_args`) and only those whose key the query returns are
    written: what a batch causes can be prepared for every candidate row, and the statement keeps what
    belongs to the rows it wrote. `routed`: the events may carry a routing key other than their type (without
    it such an event is refused, so the parameter a statement would rarely need is not sent).
    """

    first: int
    key: str | None = None
    kept: str | None = None
    routed: bool = False

    def __post_init__(self) -> None:
        if (self.key is None) != (self.kept is None):
            raise ValueError("`key` and `kept` go together")

    @property
    def insert(self) -> str:
        """The body of the statement's `events AS (...)`."""
        n = self.first
        arrays = [f"${n}::text[]", f"${n + 1}::text[]", f"${n + 2}::bytea[]"]
        names = ["event_id", "event_type", "body"]
        if self.routed:
            arrays.append(f"${n + len(arrays)}::text[]")
            names.append("routing_key")
        where = ""
        if self.key is not None:
            arrays.append(f"${n + len(arrays)}::{self.key}[]")
            where = f" WHERE e.key IN ({self.kept})"
        columns = ", ".join(names)
        return (
            f"INSERT INTO outbox ({columns}) SELECT {columns}"
            f" FROM unnest({', '.join(arrays)}) AS e({columns}{', key' if self.key else ''}){where}"
        )

    @property
    def notify(self) -> str:
        """The wake-up, for the statement's final SELECT."""
        return NOTIFY

    def args(self, events: Sequence[Event]) -> list[list[Any]]:
        """The part's parameters, when its events carry no key."""
        if self.key is not None:
            raise TypeError("this part's events carry keys: use keyed_args")
        return _arrays([e if type(e) is OutboxRow else _row(e) for e in events], routed=self.routed)

    def keyed_args(self, events: Sequence[Keyed[Any]]) -> list[list[Any]]:
        """The part's parameters, when its events carry keys."""
        if self.key is None:
            raise TypeError("this part's events carry no key: use args")
        rows = [e if type(e) is OutboxRow else _row(e) for _, e in events]
        return [*_arrays(rows, routed=self.routed), [k for k, _ in events]]


def _row(event: Event) -> OutboxRow:
    if isinstance(event, OutboxRow):
        return event
    return OutboxRow(event.id, event.type, event.to_json())


def _arrays(rows: Sequence[OutboxRow], *, routed: bool) -> list[list[Any]]:
    """The columns of the rows (routing key where it is not the type: NULL, and the relay uses the type)."""
    if not rows:
        return [[], [], [], []] if routed else [[], [], []]
    # Transposed by zip (in C): the hot paths call this for every event they write.
    ids, types, bodies, keys = map(list, zip(*rows, strict=True))
    if routed:
        return [ids, types, bodies, keys]
    if keys.count(None) != len(keys):
        raise ValueError("an event with a routing key of its own, in a statement part not `routed`")
    return [ids, types, bodies]


async def forget_published(conn: Connection, event_ids: Sequence[str]) -> list[str]:
    """Delete the published events among these (their bodies may hold what an erasure must not leave behind);
    returns the ids deleted. Events not yet published stay."""
    rows = await conn.fetch(
        "DELETE FROM outbox WHERE published_at IS NOT NULL AND event_id = ANY($1::text[]) RETURNING event_id",
        list(event_ids),
    )
    return [row["event_id"] for row in rows]


async def forget_published_containing(conn: Connection, needles: Sequence[str]) -> int:
    """Delete the published events whose body contains one of these texts; returns how many."""
    status = await conn.execute(
        "DELETE FROM outbox WHERE published_at IS NOT NULL"
        " AND EXISTS (SELECT 1 FROM unnest($1::text[]) AS n(s) WHERE position(convert_to(n.s, 'UTF8') IN body) > 0)",
        list(needles),
    )
    return int(status.split()[-1])


async def held(conn: Connection, event_ids: Sequence[str]) -> set[str]:
    """Those of these events still in the outbox (published or not: the purge has not taken them yet)."""
    rows = await conn.fetch("SELECT event_id FROM outbox WHERE event_id = ANY($1::text[])", list(event_ids))
    return {row["event_id"] for row in rows}


# The relay's claim: the oldest waiting rows, up to a batch, that no other relay holds (after INDEX_SCAN_CLAIM).
CLAIM = (
    "SELECT id, event_id, event_type, body, routing_key FROM outbox WHERE published_at IS NULL"
    " ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
)


class AmqpPublisher:
    """The relay's publish: one CloudEvent body onto the exchange with CONTRACT section 3's properties,
    persistent, returning once the broker confirmed it (raising if it did not, or not within `timeout`).

    It writes straight to a confirm-mode channel of its own (aio-pika's robust channel, so it comes back
    with the connection) and builds only the AMQP properties: a publish through FastStream's broker or an
    aio-pika `Message` costs several times the CPU, and every event of every service goes through here.

    `user_id` is the login `connect` logs in as (`spm_common.publishers.amqp_login`): every message carries it,
    and RabbitMQ refuses a publish whose user-id is not the connection's, so a consumer knows which user
    published an event whatever its `source` says (the notifier's requests: README, "Notification requests").
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[AbstractRobustConnection]],
        exchange: str,
        *,
        timeout: float,
        user_id: str | None = None,
    ) -> None:
        self._connect = connect
        self._exchange = exchange
        self._timeout = timeout
        self._user_id = user_id
        self._channel: AbstractRobustChannel | None = None
        self._opening = asyncio.Lock()

    async def __call__(self, event_type: str, event_id: str, body: bytes, routing_key: str | None = None) -> object:
        channel = self._channel
        if channel is None or channel.is_closed:
            channel = await self._open()
        underlay = await channel.get_underlay_channel()
        return await underlay.basic_publish(
            body,
            exchange=self._exchange,
            routing_key=routing_key or event_type,
            properties=spec.Basic.Properties(
                content_type=CONTENT_TYPE,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT.value,
                message_id=event_id,
                message_type=event_type,
                user_id=self._user_id,
            ),
            timeout=self._timeout,
        )

    async def publish_many(
        self, messages: Sequence[tuple[str, str, bytes, str]], written: Callable[[], None] = lambda: None
    ) -> Sequence[object]:
        """Publish a batch of (event_type, event_id, body, routing_key) in one socket write, calling `written` once
        it is queued for the socket (what is published after that goes out after it); each message's result is its
        broker confirmation, or the exception that stands for its failure (nack, channel lost, no answer in time).

        The write goes past aio-pika's and aiormq's public API: see `spm_common.internals.write_publishes`."""
        channel = self._channel
        if channel is None or channel.is_closed:
            channel = await self._open()
        underlay = await channel.get_underlay_channel()
        confirmations = await write_publishes(underlay, self._exchange, messages, self._user_id)
        written()
        await asyncio.wait(confirmations, timeout=self._timeout)
        results: list[object] = []
        for confirmation in confirmations:
            if not confirmation.done():
                confirmation.cancel()
                results.append(TimeoutError("the broker did not confirm the publish in time"))
            elif confirmation.cancelled():
                results.append(ConnectionError("the channel closed before the broker confirmed the publish"))
            else:
                results.append(confirmation.exception() or confirmation.result())
        return results

    async def _open(self) -> AbstractRobustChannel:
        async with self._opening:  # a batch's publishes arrive together: open one channel, not one each
            if self._channel is None or self._channel.is_closed:
                connection = await self._connect()
                self._channel = await connection.channel(publisher_confirms=True)
            assert self._channel is not None
            return self._channel

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(Exception):
                await channel.close()


async def _first_of(task: asyncio.Task[Any], event: Awaitable[Any]) -> None:
    """Until `task` is done or `event` happened, whichever comes first."""
    other = asyncio.ensure_future(event)
    try:
        await asyncio.wait((task, other), return_when=asyncio.FIRST_COMPLETED)
    finally:
        other.cancel()


class _Claim:
    """What a batch under way tells the relay: how many rows it claimed, and when their messages are written."""

    def __init__(self) -> None:
        self.rows = 0
        self.written = asyncio.Event()


class OutboxRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        listen_dsn: str,
        schema: str,
        publish: Publish,
        *,
        service: str,
        batch_size: int = 200,
        poll_seconds: float = 2.0,
        retention_hours: float = 24.0,
        publish_many: PublishMany | None = None,
        health: LoopHealth | None = None,
        purges: Sequence[Callable[[], Awaitable[int]]] = (),
        on_purged: OnPurged | None = None,
    ) -> None:
        self._pool = pool
        # More deletions on the published rows' schedule (the inbox's, spm_common.retention): each deletes a
        # batch at most and returns how many; PURGE_BATCH means more wait.
        self._purges = purges
        self._on_purged = on_purged
        self._health = health or LoopHealth(service, "outbox-relay")
        self._schema = schema
        self._publish = publish
        self._publish_many = publish_many  # when given, a batch goes out through it rather than `publish`
        self._service = service
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._retention_seconds = retention_hours * 3600
        self._listener = Listener(listen_dsn, channel_name(schema))
        self._resumed = asyncio.Event()

    async def run(self) -> None:
        backoff = 0.5
        loop = asyncio.get_running_loop()
        next_purge = loop.time()  # at start too: a service restarted more often than hourly still purges
        while True:
            try:
                await self._listener.ensure()
                await self._drain()
                # The last claim came back short: nothing was left waiting (rows another relay holds are under
                # way). Counting them here would cost every pass a round trip before the relay listens again.
                OUTBOX_BACKLOG.labels(self._service).set(0)
                self._health.ok()
                backoff = 0.5
                if loop.time() >= next_purge:
                    if await self.purge() == PURGE_BATCH:
                        continue  # more to delete: the next batch after the next drain, without waiting
                    next_purge = loop.time() + PURGE_EVERY_SECONDS
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._health.failed(describe_error(exc), backoff=backoff)
                # How many wait, while they wait (bounded: Postgres may be what is away).
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(BACKLOG_TIMEOUT_SECONDS):
                        await self._update_backlog()
                await self._listener.close()
                # `resume` (called when the broker connection is back) ends the wait early.
                self._resumed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(backoff):  # not wait_for: see pgnotify.Listener.wait
                        await self._resumed.wait()
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            await self._listener.wait(self._poll_seconds)

    async def _drain(self) -> None:
        """Publish batches until a claim comes back short and its batch is done with nothing notified
        meanwhile. A batch is claimed as soon as the one before is written to the broker, if that one was full
        or a notification came since it was claimed: a row committed while a batch awaits its confirmations,
        marking and commit waits for one claim, not for the whole pass. At most two batches are in flight,
        written in the order they were claimed."""
        in_flight: list[asyncio.Task[int]] = []
        try:
            while True:
                self._listener.clear()  # this claim sees every row notified so far
                claim = _Claim()
                batch = asyncio.create_task(self.publish_batch(claim))
                in_flight.append(batch)
                await _first_of(batch, claim.written.wait())
                if len(in_flight) == 2:
                    await in_flight.pop(0)  # raises its failure
                if claim.rows < self._batch_size:
                    await _first_of(batch, self._listener.notification())
                    if not self._listener.notified():
                        await in_flight.pop()
                        return
        except asyncio.CancelledError:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
            raise
        except Exception:
            # The other batch's messages are on their way: it confirms and marks them before the relay backs off.
            await asyncio.gather(*in_flight, return_exceptions=True)
            raise

    def resume(self) -> None:
        """Whatever made the relay back off is over (the broker is back): try again now."""
        self._resumed.set()

    async def close(self) -> None:
        await self._listener.close()

    async def publish_batch(self, claim: _Claim | None = None) -> int:
        """Publish one batch; return how many rows it claimed. Raises if any publish was not confirmed.
        `claim`, if given, learns how many rows were claimed and when their messages are written."""
        claim = claim or _Claim()
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(INDEX_SCAN_CLAIM)
            rows = await conn.fetch(CLAIM, self._batch_size)
            claim.rows = len(rows)
            if not rows:
                return 0
            results = await self._publish_rows(rows, claim.written.set)
            sent = [
                row["id"] for row, result in zip(rows, results, strict=True) if not isinstance(result, BaseException)
            ]
            failures: Sequence[BaseException] = [r for r in results if isinstance(r, BaseException)]
            if sent:
                await conn.execute(
                    "UPDATE outbox SET published_at = now(), attempts = attempts + 1 WHERE id = ANY($1::bigint[])",
                    sent,
                )
            if failures:
                failed = [row["id"] for row, r in zip(rows, results, strict=True) if isinstance(r, BaseException)]
                await conn.execute(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = ANY($1::bigint[])",
                    failed,
                    describe_error(failures[0]),
                )
        published = Counter(
            row["event_type"] for row, r in zip(rows, results, strict=True) if not isinstance(r, BaseException)
        )
        for event_type, count in published.items():
            EVENTS_PUBLISHED.labels(self._service, event_type).inc(count)
        if failures:
            EVENTS_PUBLISH_FAILED.labels(self._service).inc(len(failures))
            raise failures[0]
        return len(rows)

    async def _publish_rows(self, rows: Sequence[asyncpg.Record], written: Callable[[], None]) -> Sequence[object]:
        messages = [
            (row["event_type"], row["event_id"], bytes(row["body"]), row["routing_key"] or row["event_type"])
            for row in rows
        ]
        if self._publish_many is None:
            try:
                return await asyncio.gather(*(self._publish(*m) for m in messages), return_exceptions=True)
            finally:
                written()
        try:
            return await self._publish_many(messages, written)
        except Exception as exc:  # nothing of the batch went out (the channel is closed, say)
            return [exc] * len(messages)
        finally:
            written()

    async def purge(self) -> int:
        """One batch of every purge: the published rows, then the others; the largest count."""
        counts = [await self.purge_published()]
        for purge in self._purges:
            counts.append(await purge())
        return max(counts)

    async def purge_published(self) -> int:
        """Delete up to PURGE_BATCH rows published longer ago than the retention, oldest first; how many."""
        async with self._pool.acquire() as conn, conn.transaction():
            result = await conn.execute(PURGE, self._retention_seconds, PURGE_BATCH, timeout=PURGE_TIMEOUT_SECONDS)
            count = int(result.split()[-1])
            if count and self._on_purged is not None:
                await self._on_purged(conn, count, datetime.now(UTC) - timedelta(seconds=self._retention_seconds))
        return count

    async def _update_backlog(self) -> None:
        async with self._pool.acquire() as conn:
            backlog = await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        OUTBOX_BACKLOG.labels(self._service).set(backlog)
