"""Erasure reaches a service's dead letters (CONTRACT section 6: after it, no queue holds the person's data):
the ones that name the address go, everyone else's stay in their order, and a crash midway loses nothing.
A probe service with its real `.dlq` on RabbitMQ and its real parking table in Postgres."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aio_pika
import orjson
import pytest
from aio_pika.abc import AbstractIncomingMessage
from spm_common import deadletters
from spm_common.deadletters import about_address, list_dead_letters, remove_dead_letters
from spm_common.handlers import Handlers, Meta
from spm_common.migrations import SchemaRoles, migrate
from spm_common.privacy import DeadLetterEraser, PrivacyRequestConfirmed
from spm_common.testing.world import AMQP_URL

from .conftest import PROBE_MIGRATIONS
from .test_consumer import Effect

SUBJECT = "ada.erased@example.test"


async def _nothing(_conn: Any, _payload: Effect, _event: Meta) -> None:
    return None


@pytest.fixture
async def clean(lab: Any) -> None:
    conn = await lab.admin()
    try:
        await migrate(conn, "orders", PROBE_MIGRATIONS, SchemaRoles.of("orders"))
        await conn.execute("DELETE FROM orders.dead_letters_parked")
    finally:
        await conn.close()


async def _stop_parking(runtime: Any) -> None:
    """Stop the probe's own parking loop, so the queue holds exactly what the test puts there."""
    for task in runtime._tasks:
        if task.get_name() == "dead-letter-parking":
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _order(email: str, name: str) -> bytes:
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "type": "order.placed",
            "source": "https://shop.example/orders",
            "data": {"order_id": "FS-1", "purchaser": {"name": name, "email": email, "phone": "+84 912 000 111"}},
        }
    )


async def _dead_letters(amqp: aio_pika.abc.AbstractRobustConnection, queue: str, bodies: list[bytes]) -> list[str]:
    """Put dead letters on the queue as the consumer leaves them (reason and time in headers); their ids."""
    ids = []
    channel = await amqp.channel(publisher_confirms=True)
    try:
        for body in bodies:
            message_id = str(uuid.uuid4())
            await channel.default_exchange.publish(
                aio_pika.Message(
                    body,
                    message_id=message_id,
                    type="order.placed",
                    headers={"x-spm-error": "ValidationError: items: too short", "x-spm-attempt": 1},
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=queue,
            )
            ids.append(message_id)
    finally:
        await channel.close()
    return ids


def _erasure(email: str) -> PrivacyRequestConfirmed:
    return PrivacyRequestConfirmed(
        request_id=uuid.uuid4(), kind="erasure", email=email, locale="en", confirmed_at=datetime.now(UTC)
    )


async def test_erasure_removes_the_dead_letters_about_the_address_and_keeps_the_others_in_order(
    clean: None, probe: Callable[..., Any], amqp: aio_pika.abc.AbstractRobustConnection
) -> None:
    async with probe(handlers=Handlers().on(Effect, _nothing)) as runtime:
        await _stop_parking(runtime)
        queue = runtime.topology.dead_letter_queue_name
        ids = await _dead_letters(
            amqp,
            queue,
            [
                _order("bob@example.test", "Bob Other"),
                # The address in another case, inside the body: about the subject.
                _order(SUBJECT.upper(), "Ada Erased"),
                _order("carol@example.test", "Carol Other"),
                # Someone else whose address holds the subject's: not about the subject.
                _order("b" + SUBJECT, "Bada Other"),
                # The address escaped in JSON, as a publisher with ASCII-only output writes it.
                b'{"type": "x", "data": {"to": "ada.erased\\u0040example.test"}}',
                _order("dave@example.test", "Dave Other"),
                # Enough more that copies published out of order would show.
                *(_order(f"person{i}@example.test", f"Person {i}") for i in range(60)),
            ],
        )
        # A row parked before parking masked addresses (or that its masking missed), and one of someone else's.
        await runtime.pool.execute(
            "INSERT INTO dead_letters_parked (message_id, event_type, reason, body) VALUES"
            " ('p1', 'order.placed', NULL, $1::jsonb), ('p2', 'order.placed', NULL, $2::jsonb)",
            orjson.dumps({"data": {"email": SUBJECT}}).decode(),
            orjson.dumps({"data": {"email": "bob@example.test"}}).decode(),
        )

        eraser = DeadLetterEraser.of(runtime.settings)
        request = _erasure(f"  {SUBJECT.title()} ")
        async with runtime.pool.acquire() as conn, conn.transaction():
            removed = await eraser.erase(conn, request)
        assert removed == 3  # two dead letters, one parked row

        # What an operator sees (`spm-admin dlq list`, the console): everyone else's, in their order, reasons kept.
        shown = await list_dead_letters(AMQP_URL, runtime.topology, 100, runtime.pool)
        assert [d.message_id for d in shown] == [ids[0], ids[2], ids[3], *ids[5:]]
        assert {d.reason for d in shown} == {"ValidationError: items: too short"}
        assert [r["message_id"] for r in await runtime.pool.fetch("SELECT message_id FROM dead_letters_parked")] == [
            "p2"
        ]

        # The same request again (a batch rolled back and run once more): nothing left, the count stands.
        async with runtime.pool.acquire() as conn, conn.transaction():
            assert await eraser.erase(conn, request) == 2  # the queue's two, remembered; the parked row is gone
        assert len(await list_dead_letters(AMQP_URL, runtime.topology, 100, runtime.pool)) == 64


async def test_a_listing_waits_for_an_erasure_going_through_the_queue(
    clean: None, probe: Callable[..., Any], amqp: aio_pika.abc.AbstractRobustConnection
) -> None:
    """A listing holds the messages it shows unacknowledged, out of an erasure's sight: run at the same time,
    the erasure would miss them and they would go back to the queue. The two take turns on the queue's lock."""
    async with probe(handlers=Handlers().on(Effect, _nothing)) as runtime:
        await _stop_parking(runtime)
        queue = runtime.topology.dead_letter_queue_name
        ids = await _dead_letters(amqp, queue, [_order(SUBJECT, "Ada"), _order("bob@example.test", "Bob")])
        async with runtime.pool.acquire() as erasing, erasing.transaction():
            await erasing.execute(deadletters.LOCK, queue)  # an erasure is going through the queue
            listing = asyncio.create_task(list_dead_letters(AMQP_URL, runtime.topology, 100, runtime.pool))
            await asyncio.sleep(0.5)
            assert not listing.done()  # it waits: no message of the queue is held by the listing
            assert await remove_dead_letters(
                AMQP_URL, runtime.topology, about_address(SUBJECT)
            ) == deadletters.DeadLetterRemoval(removed=1, kept=1)
        assert [d.message_id for d in await asyncio.wait_for(listing, 10)] == [ids[1]]


async def test_a_crash_before_the_acknowledgements_duplicates_survivors_and_loses_nothing(
    clean: None,
    probe: Callable[..., Any],
    amqp: aio_pika.abc.AbstractRobustConnection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with probe(handlers=Handlers().on(Effect, _nothing)) as runtime:
        await _stop_parking(runtime)
        queue = runtime.topology.dead_letter_queue_name
        ids = await _dead_letters(
            amqp, queue, [_order("bob@example.test", "Bob"), _order(SUBJECT, "Ada"), _order("eve@example.test", "Eve")]
        )

        # The process dies once the survivors' copies are confirmed, before any original is acknowledged.
        async def dies(self: AbstractIncomingMessage, multiple: bool = False) -> None:
            raise ConnectionError("killed")

        with monkeypatch.context() as patch:
            patch.setattr(aio_pika.IncomingMessage, "ack", dies)
            with pytest.raises(ConnectionError):
                await remove_dead_letters(AMQP_URL, runtime.topology, about_address(SUBJECT))
        await asyncio.sleep(0.3)  # the connection closed: the unacknowledged originals are back

        left = [str(d.message_id) for d in await list_dead_letters(AMQP_URL, runtime.topology, 100, runtime.pool)]
        assert sorted(left) == sorted([*ids, ids[0], ids[2]])  # every original, and the copies: duplicates only

        # Run again (the erasure's transaction rolled back, the request comes again): the subject's one goes.
        again = await remove_dead_letters(AMQP_URL, runtime.topology, about_address(SUBJECT))
        assert again == deadletters.DeadLetterRemoval(removed=1, kept=4)
        left = [str(d.message_id) for d in await list_dead_letters(AMQP_URL, runtime.topology, 100, runtime.pool)]
        assert ids[1] not in left and sorted(set(left)) == sorted([ids[0], ids[2]])


def _message(body: bytes, headers: dict[str, Any] | None = None) -> AbstractIncomingMessage:
    class _Stub:
        message_id = correlation_id = type = app_id = None

    stub = _Stub()
    stub.body = body  # type: ignore[attr-defined]
    stub.headers = headers or {}  # type: ignore[attr-defined]
    return stub  # type: ignore[return-value]


def test_an_address_is_recognised_in_any_spelling_but_never_inside_another_address() -> None:
    about = about_address("an.nguyễn@example.vn")
    assert about(_message('{"email": "AN.NGUYỄN@Example.VN"}'.encode()))
    # Decomposed accents (NFD), as some systems write them.
    assert about(_message(b'{"email": "an.nguye\\u0302\\u0303n@example.vn"}'))
    assert about(_message(b"not json: <an.nguy\xe1\xbb\x85n@example.vn>"))
    assert about(_message(b"{}", {"x-original-to": b"an.nguy\xe1\xbb\x85n@example.vn"}))
    assert about(_message(b'{"url": "https://spmgroup.vn/u?email=an.nguy%E1%BB%85n%40example.vn"}'))
    assert about(_message(b"WHERE email = 'an.nguy\xe1\xbb\x85n@example.vn'"))
    assert not about(_message('{"email": "ban.nguyễn@example.vn"}'.encode()))
    assert not about(_message('{"email": "x+an.nguyễn@example.vn"}'.encode()))
    assert not about(_message('{"email": "an.nguyễn@example.vn.co"}'.encode()))
    assert not about(_message(b'{"email": "an.nguyen@example.vn"}'))
