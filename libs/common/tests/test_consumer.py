"""The idempotent consumer and its failure routing, against the real Postgres and RabbitMQ: duplicates
have one effect; failures retry with a delay, then dead-letter with their reason while the queue flows;
unprocessable messages (a payload its model refuses included) dead-letter at once, before any handler; a
route may keep an invalid payload instead; `spm-admin dlq list` and `dlq replay` work."""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import aio_pika
import orjson
import pytest
from prometheus_client import REGISTRY
from pydantic import ConfigDict, Field, ValidationError
from spm_common.consumer import ATTEMPT_HEADER, ERROR_HEADER, PermanentError
from spm_common.db import Connection
from spm_common.envelope import CONTENT_TYPE, CloudEvent, Payload, amqp_message, new_event
from spm_common.handlers import Handlers, Meta, Received
from spm_common.testing.world import World
from spm_common.topology import Topology

pytestmark = pytest.mark.asyncio
SOURCE = "https://shop.example/orders"


def consumed(event_type: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "spm_events_consumed_total", {"service": "orders", "type": event_type, "outcome": outcome}
    )
    return value or 0.0


class Probe(Payload):
    """Any payload: the probe's events carry whatever a test puts in them."""

    model_config = ConfigDict(extra="allow")


class Effect(Probe):
    event_type: ClassVar[str] = "probe.effect"


class Fails(Probe):
    event_type: ClassVar[str] = "probe.fails"


class Permanent(Probe):
    event_type: ClassVar[str] = "probe.permanent"


class Later(Probe):
    event_type: ClassVar[str] = "probe.later"


class Licence(Payload):
    event_type: ClassVar[str] = "probe.licence"

    sku: str
    seats: int = Field(ge=1)


async def record_effect(conn: Connection, payload: Payload, event: Meta) -> None:
    await conn.execute(
        "INSERT INTO effects (source, event_id, event_type) VALUES ($1, $2, $3)", event.source, event.id, event.type
    )


async def effects(runtime: Any, *event_ids: str) -> list[tuple[str, str]]:
    """Effects of these events (the probe's tables are shared by the tests of a session)."""
    rows = await runtime.pool.fetch(
        "SELECT source, event_id FROM effects WHERE event_id = ANY($1::text[]) ORDER BY n", list(event_ids)
    )
    return [(row["source"], row["event_id"]) for row in rows]


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


async def dead_letters(
    amqp: aio_pika.abc.AbstractRobustConnection, topology: Topology, count: int, timeout: float = 10
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Take `count` messages off the service's dead-letter queue (waiting for them to arrive)."""
    channel = await amqp.channel()
    try:
        queue = await channel.declare_queue(topology.dead_letter_queue_name, passive=True)
        taken: list[aio_pika.abc.AbstractIncomingMessage] = []
        async with asyncio.timeout(timeout):
            while len(taken) < count:
                message = await queue.get(no_ack=True, fail=False)
                if message is None:
                    await asyncio.sleep(0.05)
                else:
                    taken.append(message)
        return taken
    finally:
        await channel.close()


def event_body(event_type: str, event_id: str | None = None, source: str = SOURCE, **data: Any) -> CloudEvent:
    return new_event(event_type, source, data, event_id=event_id)


async def send(publish: Callable[..., Awaitable[None]], exchange: str, event: CloudEvent, **properties: Any) -> None:
    properties.setdefault("content_type", CONTENT_TYPE)
    properties.setdefault("message_id", event.id)
    properties.setdefault("type", event.type)
    await publish(exchange, event.type, event.to_json(), **properties)


async def test_the_same_event_twice_has_its_effect_once(
    probe: Callable[..., Any], publish: Callable[..., Awaitable[None]]
) -> None:
    kind = Effect.event_type
    async with probe(handlers=Handlers().on(Effect, record_effect)) as runtime:
        exchange = runtime.settings.exchange
        duplicates_before = consumed(kind, "duplicate")
        shared_id = str(uuid.uuid4())
        first = event_body(kind, shared_id, order="one")
        again = event_body(kind, shared_id, order="one")  # redelivered by its source: same source and id
        elsewhere = event_body(kind, shared_id, source="urn:spm:another-system", order="two")
        for event in (first, again, elsewhere):
            await send(publish, exchange, event)

        await eventually(lambda: _at_least(consumed(kind, "duplicate") - duplicates_before, 1))
        await eventually(lambda: _length_is(effects(runtime, shared_id), 2))
        await asyncio.sleep(0.3)
        assert sorted(await effects(runtime, shared_id)) == sorted(
            [(SOURCE, shared_id), ("urn:spm:another-system", shared_id)]
        )
        inbox = await runtime.pool.fetch("SELECT source FROM inbox WHERE event_id = $1", shared_id)
        assert sorted(row["source"] for row in inbox) == sorted([SOURCE, "urn:spm:another-system"])


async def test_events_arriving_within_the_linger_are_written_in_one_batch(
    probe: Callable[..., Any], amqp: aio_pika.abc.AbstractRobustConnection
) -> None:
    calls: list[int] = []

    async def record_all(conn: Connection, events: Sequence[Received[Effect]]) -> None:
        calls.append(len(events))
        for payload, meta in events:
            await record_effect(conn, payload, meta)

    async with probe(handlers=Handlers().on_batch(Effect, record_all), consumer_linger_ms=600) as runtime:
        channel = await amqp.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(runtime.settings.exchange)
        events = [event_body("probe.effect", n=n) for n in range(5)]
        for event in events:  # one by one, each confirmed: without the linger, each arrives on its own
            await exchange.publish(amqp_message(event), routing_key=event.type)
        await channel.close()
        await eventually(lambda: _length_is(effects(runtime, *(e.id for e in events)), 5))
        assert calls == [5]


async def test_a_full_batch_does_not_wait_for_the_linger(
    probe: Callable[..., Any], publish: Callable[..., Awaitable[None]]
) -> None:
    loop = asyncio.get_running_loop()

    async with probe(
        handlers=Handlers().on(Effect, record_effect), consumer_batch=3, prefetch=3, consumer_linger_ms=1000
    ) as runtime:
        events = [event_body("probe.effect", n=n) for n in range(3)]
        started = loop.time()
        for event in events:
            await send(publish, runtime.settings.exchange, event)
        await eventually(lambda: _length_is(effects(runtime, *(e.id for e in events)), 3))
        assert loop.time() - started < 0.9, "a batch as large as SPM_CONSUMER_BATCH is written at once"


async def _at_least(value: float, minimum: float) -> bool:
    return value >= minimum


async def _length_is(rows: Awaitable[list[Any]], n: int) -> bool:
    return len(await rows) == n


async def test_a_failing_handler_dead_letters_after_max_attempts_while_the_queue_flows(
    probe: Callable[..., Any],
    publish: Callable[..., Awaitable[None]],
    amqp: aio_pika.abc.AbstractRobustConnection,
    queues: Callable[[Topology], Awaitable[dict[str, int]]],
) -> None:
    loop = asyncio.get_running_loop()
    attempts: list[float] = []
    processed: list[float] = []

    async def always_fails(conn: Connection, payload: Fails, event: Meta) -> None:
        attempts.append(loop.time())
        await conn.execute("INSERT INTO things (id) VALUES ($1)", event.id)  # rolled back with the failure
        raise RuntimeError("cannot reach the licence server for visitor@example.com")

    async def works(conn: Connection, payload: Effect, event: Meta) -> None:
        await record_effect(conn, payload, event)
        processed.append(loop.time())

    # No linger: each message is a batch of its own, so every call of the failing handler is one attempt (in a
    # batch with others it would run once more, in the batch that fails before its messages go one by one).
    async with probe(
        handlers=Handlers().on(Fails, always_fails).on(Effect, works),
        max_attempts=3,
        retry_delay_ms=300,
        consumer_linger_ms=0,
    ) as runtime:
        exchange, topology = runtime.settings.exchange, runtime.topology
        failing = event_body("probe.fails")
        await send(publish, exchange, failing)
        followers = [event_body("probe.effect", n=n) for n in range(5)]
        for event in followers:
            await send(publish, exchange, event)

        [dead] = await dead_letters(amqp, topology, 1)
        assert len(attempts) == 3
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        assert all(gap >= 0.25 for gap in gaps), f"retries must wait for the retry delay, gaps {gaps}"
        assert len(processed) == 5 and max(processed) < attempts[-1], "the following messages went through meanwhile"

        assert dead.message_id == failing.id
        assert dead.type == "probe.fails"
        assert dead.body == failing.to_json()
        assert dead.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        headers = dead.headers or {}
        assert headers[ATTEMPT_HEADER] == 3
        reason = str(headers[ERROR_HEADER])
        assert reason.startswith("RuntimeError: cannot reach the licence server")
        assert "visitor@example.com" not in reason
        await asyncio.sleep(0.2)
        assert await queues(topology) == {"main": 0, "retry": 0, "dlq": 0}
        assert await runtime.pool.fetchval("SELECT count(*) FROM things WHERE id = $1", failing.id) == 0
        assert await runtime.pool.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", failing.id) == 0


async def test_unprocessable_messages_dead_letter_at_once(
    probe: Callable[..., Any],
    publish: Callable[..., Awaitable[None]],
    amqp: aio_pika.abc.AbstractRobustConnection,
    queues: Callable[[Topology], Awaitable[dict[str, int]]],
) -> None:
    calls: dict[str, int] = {"permanent": 0, "licence": 0}

    async def permanent(conn: Connection, payload: Permanent, event: Meta) -> None:
        calls["permanent"] += 1
        raise PermanentError("order refers to an unknown product")

    async def licence(conn: Connection, payload: Licence, event: Meta) -> None:
        calls["licence"] += 1
        await record_effect(conn, payload, event)

    async with probe(
        handlers=Handlers().on(Permanent, permanent).on(Licence, licence).on(Effect, record_effect),
        max_attempts=5,
        retry_delay_ms=2000,
        consumer_linger_ms=0,  # each message alone: a handler's calls are its attempts (see the test above)
    ) as runtime:
        exchange, topology = runtime.settings.exchange, runtime.topology
        good = event_body("probe.effect")
        cases = {
            "malformed": (b'{"specversion": "1.0", "id": ', CONTENT_TYPE),
            "not-a-cloudevent": (orjson.dumps({"hello": "world", "email": "someone@example.com"}), CONTENT_TYPE),
            "wrong-content-type": (good.to_json(), "text/plain"),
        }
        for name, (body, content_type) in cases.items():
            await publish(exchange, "probe.effect", body, content_type=content_type, message_id=name)
        await send(publish, exchange, event_body("probe.permanent", "permanent"))
        await send(publish, exchange, event_body("probe.licence", "invalid", sku="SPM-DICT-PRO", seats="Trần Thị Thử"))
        await send(publish, exchange, event_body("probe.licence", "no-seats", sku="SPM-DICT-PRO", seats=0))
        valid = event_body("probe.licence", sku="SPM-DICT-PRO", seats=2)
        await send(publish, exchange, valid)

        dead = {m.message_id: m for m in await dead_letters(amqp, topology, 6, timeout=5)}
        assert set(dead) == {"malformed", "not-a-cloudevent", "wrong-content-type", "permanent", "invalid", "no-seats"}
        assert all((m.headers or {})[ATTEMPT_HEADER] == 1 for m in dead.values())
        await eventually(lambda: _length_is(effects(runtime, valid.id), 1))
        # A payload its model refuses never reaches the handler: the consumer validated it first.
        assert calls == {"permanent": 1, "licence": 1}
        reasons = {name: str((m.headers or {})[ERROR_HEADER]) for name, m in dead.items()}
        assert reasons["malformed"].startswith("JSONDecodeError")
        assert reasons["not-a-cloudevent"].startswith("ValidationError")
        assert "unsupported content type 'text/plain'" in reasons["wrong-content-type"]
        assert reasons["permanent"] == "PermanentError: order refers to an unknown product"
        assert reasons["invalid"].startswith("ValidationError: 1 validation error(s) for Licence: seats: ")
        assert reasons["no-seats"].startswith("ValidationError: 1 validation error(s) for Licence: seats: ")
        assert dead["invalid"].type == "probe.licence"
        assert await runtime.pool.fetchval("SELECT count(*) FROM inbox WHERE event_id = 'invalid'") == 0
        for reason in reasons.values():
            assert "example.com" not in reason and "Trần" not in reason and "hello" not in reason
        assert dead["wrong-content-type"].body == good.to_json()
        assert dead["wrong-content-type"].content_type == "text/plain"
        assert await queues(topology) == {"main": 0, "retry": 0, "dlq": 0}
        assert await effects(runtime, good.id) == []


async def test_handlers_take_the_validated_payload_and_envelope_and_a_route_may_keep_an_invalid_one(
    probe: Callable[..., Any],
    publish: Callable[..., Awaitable[None]],
    queues: Callable[[Topology], Awaitable[dict[str, int]]],
) -> None:
    seen: list[tuple[str, str]] = []
    taken: list[tuple[Licence, Meta]] = []
    refused: list[tuple[str, list[Any]]] = []

    async def every(conn: Connection, events: Sequence[CloudEvent]) -> None:
        seen.extend(("every", event.id) for event in events)

    async def licence(conn: Connection, payload: Licence, meta: Meta) -> None:
        seen.append(("licence", meta.id))
        taken.append((payload, meta))
        await record_effect(conn, payload, meta)

    def keep(meta: Meta, error: ValidationError) -> None:
        refused.append((meta.id, [e["loc"] for e in error.errors()]))

    async with probe(handlers=Handlers(every=every).on(Licence, licence, on_invalid=keep)) as runtime:
        exchange = runtime.settings.exchange
        good = new_event(Licence.event_type, SOURCE, {"sku": "SPM-OCR", "seats": "3"}, correlation_id="corr-1")
        bad = event_body(Licence.event_type, sku="SPM-OCR", seats="many")
        other = event_body("probe.other", anything="goes")  # no route: the `every` handler alone sees it
        for event in (good, bad, other):
            await send(publish, exchange, event)
        await eventually(lambda: _length_is(effects(runtime, good.id), 1))
        await eventually(lambda: _at_least(len(seen), 4))

        [(payload, meta)] = taken
        assert payload == Licence(sku="SPM-OCR", seats=3)  # as its model made it: "3" is the number 3
        assert (meta.id, meta.type, meta.source, meta.correlationid) == (good.id, good.type, SOURCE, "corr-1")
        assert meta.time == good.time
        assert refused == [(bad.id, [("seats",)])]
        assert ("every", bad.id) in seen and ("every", other.id) in seen
        assert seen.index(("every", good.id)) < seen.index(("licence", good.id))
        assert await queues(runtime.topology) == {"main": 0, "retry": 0, "dlq": 0}


async def test_an_event_without_content_type_is_accepted(
    probe: Callable[..., Any], publish: Callable[..., Awaitable[None]]
) -> None:
    async with probe(handlers=Handlers().on(Effect, record_effect)) as runtime:
        event = event_body("probe.effect")
        await publish(runtime.settings.exchange, event.type, event.to_json(), message_id=event.id)
        await eventually(lambda: _length_is(effects(runtime, event.id), 1))


async def spm_admin(world: World, exchange: str, *args: str) -> str:
    env = {**os.environ, **world.env(SPM_EXCHANGE=exchange, SPM_LOG_FORMAT="json")}
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "spm-admin"),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_dlq_list_shows_and_replay_moves_back(
    lab: World,
    probe: Callable[..., Any],
    publish: Callable[..., Awaitable[None]],
    queues: Callable[[Topology], Awaitable[dict[str, int]]],
    amqp: aio_pika.abc.AbstractRobustConnection,
) -> None:
    state = {"broken": True}

    async def until_fixed(conn: Connection, payload: Later, event: Meta) -> None:
        if state["broken"]:
            raise PermanentError("product SPM-DICT-PRO is not in the catalogue yet")
        await record_effect(conn, payload, event)

    async with probe(handlers=Handlers().on(Later, until_fixed)) as runtime:
        exchange, topology = runtime.settings.exchange, runtime.topology
        event = event_body("probe.later")
        await send(publish, exchange, event)
        for n in range(20):
            await publish(exchange, "probe.later", b"not json", content_type=CONTENT_TYPE, message_id=f"garbage-{n}")
        await eventually(lambda: _dlq_has(queues, topology, 21))

        listed = [orjson.loads(line) for line in (await spm_admin(lab, exchange, "dlq", "list", "orders")).splitlines()]
        by_id = {entry["message_id"]: entry for entry in listed}
        assert set(by_id) == {event.id, *(f"garbage-{n}" for n in range(19))}  # --limit 20 by default
        assert by_id[event.id]["type"] == "probe.later"
        assert by_id[event.id]["attempts"] == 1
        assert by_id[event.id]["reason"] == "PermanentError: product SPM-DICT-PRO is not in the catalogue yet"
        assert by_id["garbage-0"]["reason"].startswith("JSONDecodeError")
        assert (await queues(topology))["dlq"] == 21, "listing must not remove anything"
        whole = await spm_admin(lab, exchange, "dlq", "list", "orders", "--limit", "21")
        assert await spm_admin(lab, exchange, "dlq", "list", "orders", "--limit", "21") == whole
        # The first listing put the twenty it showed behind the one it did not.
        assert [orjson.loads(line)["message_id"] for line in whole.splitlines()] == ["garbage-19", *by_id]
        # RabbitMQ 4 drops a message past a quorum queue's delivery limit: listing must not count as one.
        assert (await _first_headers(amqp, topology)).get("x-delivery-count", 0) == 0

        state["broken"] = False
        output = await spm_admin(lab, exchange, "dlq", "replay", "orders")
        # The garbage fails again at once and is back in the dead-letter queue: replayed once, not in a loop.
        assert output.strip() == f"21 message(s) replayed to {topology.queue_name}"
        await eventually(lambda: _length_is(effects(runtime, event.id), 1))
        await eventually(lambda: _dlq_has(queues, topology, 20))
        assert (await queues(topology))["main"] == 0


async def _first_headers(amqp: aio_pika.abc.AbstractRobustConnection, topology: Topology) -> dict[str, Any]:
    channel = await amqp.channel()
    try:
        queue = await channel.declare_queue(topology.dead_letter_queue_name, passive=True)
        message = await queue.get(no_ack=False)
        return dict(message.headers or {})
    finally:
        await channel.close()  # unacknowledged: it goes back where it was


async def _dlq_has(queues: Callable[[Topology], Awaitable[dict[str, int]]], topology: Topology, n: int) -> bool:
    return (await queues(topology))["dlq"] == n
