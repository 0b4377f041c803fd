"""A service comes back by itself after its Postgres connections die: terminated by the server (every one of
them, LISTEN connection included), or dead without being closed (a half-open connection that never answers).
The consumer takes events again, the outbox relay publishes again and the LISTEN connection is re-established,
each within a bounded time."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar
from urllib.parse import urlsplit

import orjson
import pytest
from spm_common import outbox
from spm_common.db import Connection
from spm_common.envelope import CloudEvent, new_event
from spm_common.handlers import Handlers, Meta
from spm_common.pgnotify import Listener
from spm_common.testing.world import World

from .test_consumer import Probe, effects, eventually, record_effect, send

pytestmark = pytest.mark.asyncio
PING, PONG = "probe.ping", "probe.pong"


class Ping(Probe):
    event_type: ClassVar[str] = PING


async def on_ping(conn: Connection, ping: Ping, event: Meta) -> None:
    """The effect, and an event about it through the outbox: the consumer and the relay both at work."""
    await record_effect(conn, ping, event)
    await outbox.add(conn, new_event(PONG, "urn:spm:orders", {"ping": event.id}))


async def answered(pongs: Any, *marks: str, timeout: float) -> None:
    """Wait until a pong names each mark (the id of its ping, or the mark of a pong enqueued directly). The
    probes of this module share one outbox, and a relay stopped between a publish and its commit leaves the
    row to the next probe: other pongs may come too."""

    def names() -> set[str]:
        return {str(v) for m in pongs.messages for v in orjson.loads(m.body)["data"].values()}

    async with asyncio.timeout(timeout):
        while not set(marks) <= names():
            await pongs.wait(len(pongs.messages) + 1, timeout=timeout)


async def terminate_backends(lab: World, role: str) -> int:
    admin = await lab.admin()
    try:
        return int(
            await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = $1 AND usename = $2 AND pid <> pg_backend_pid()",
                lab.name,
                role,
            )
        )
    finally:
        await admin.close()


async def enqueue_directly(lab: World, schema: str, event: CloudEvent) -> None:
    """Commit an event to the service's outbox from outside it (its NOTIFY included)."""
    admin = await lab.admin()
    try:
        await admin.execute(f"SET search_path TO {schema}")
        async with admin.transaction():
            await outbox.add(admin, event)
    finally:
        await admin.close()


async def test_every_connection_terminated_and_work_flows_again(
    lab: World,
    probe: Callable[..., Any],
    tap: Callable[..., Any],
    publish: Callable[..., Awaitable[None]],
) -> None:
    # A relay that only polled would wait this long: what goes out sooner was woken by a LISTEN connection.
    poll = 30.0
    async with probe(handlers=Handlers().on(Ping, on_ping), outbox_poll_seconds=poll) as runtime:
        exchange = runtime.settings.exchange
        async with tap(exchange, PONG) as pongs:
            sent: list[str] = []

            async def ping() -> None:
                event = new_event(PING, "urn:spm:test", {"n": len(sent)})
                sent.append(event.id)
                await send(publish, exchange, event)

            await ping()
            await answered(pongs, *sent, timeout=10)
            for _ in range(5):  # every connection, the LISTEN one too, while work arrives
                assert await terminate_backends(lab, runtime.settings.role) >= 1
                await ping()
                await asyncio.sleep(0.3)
            await ping()

            # All well before the relay's next poll: it was woken when its LISTEN connection died, and
            # listens again.
            await eventually(lambda: _count_is(effects(runtime, *sent), len(sent)), timeout=poll / 3)
            await answered(pongs, *sent, timeout=poll / 3)
            assert sorted(e for _, e in await effects(runtime, *sent)) == sorted(sent), "each ping once"
            late = str(uuid.uuid4())
            await enqueue_directly(lab, runtime.settings.db_schema, new_event(PONG, "urn:spm:orders", {"late": late}))
            await answered(pongs, late, timeout=poll / 3)


class FreezingProxy:
    """A TCP proxy to Postgres that can freeze the connections open through it: from then on nothing passes
    either way and nothing is closed, as with a connection whose peer vanished. New connections work."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._ids = itertools.count()
        self._open: dict[int, tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = {}
        self._frozen: set[int] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def freeze(self) -> int:
        self._frozen.update(self._open)
        return len(self._open)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for pair in self._open.values():
            for writer in pair:
                writer.transport.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        n = next(self._ids)
        self._open[n] = (writer, up_writer)
        await asyncio.gather(self._pipe(n, reader, up_writer), self._pipe(n, up_reader, writer))
        if n not in self._frozen:
            self._open.pop(n, None)

    async def _pipe(self, n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if n not in self._frozen:  # frozen: swallowed, no answer, no close
                    writer.write(data)
                    await writer.drain()
        if n not in self._frozen:
            writer.close()


@pytest.fixture
async def proxy(lab: World) -> AsyncIterator[FreezingProxy]:
    instance = FreezingProxy(lab.database_url)
    await instance.start()
    yield instance
    await instance.stop()


async def test_connections_that_stop_answering_are_given_up_in_bounded_time(
    lab: World,
    proxy: FreezingProxy,
    probe: Callable[..., Any],
    tap: Callable[..., Any],
    publish: Callable[..., Awaitable[None]],
) -> None:
    timeout = 2.0
    database_url = lab.database_url.replace(f":{urlsplit(lab.database_url).port}/", f":{proxy.port}/")
    async with probe(
        handlers=Handlers().on(Ping, on_ping),
        database_url=database_url,
        db_command_timeout_seconds=timeout,
        outbox_poll_seconds=0.5,
    ) as runtime:
        exchange = runtime.settings.exchange
        async with tap(exchange, PONG) as pongs:
            first = new_event(PING, "urn:spm:test", {"n": 0})
            await send(publish, exchange, first)
            await answered(pongs, first.id, timeout=10)

            assert proxy.freeze() >= 2  # the pool's connection and the LISTEN one, at least
            # Waiting on a frozen connection, the consumer and the relay give it up after the statement
            # timeout (and as long again for the cancellation), take a new connection and carry on.
            second = new_event(PING, "urn:spm:test", {"n": 1})
            await send(publish, exchange, second)
            late = str(uuid.uuid4())
            await enqueue_directly(lab, runtime.settings.db_schema, new_event(PONG, "urn:spm:orders", {"late": late}))
            await answered(pongs, second.id, late, timeout=6 * timeout + 5)
            assert sorted(e for _, e in await effects(runtime, first.id, second.id)) == sorted([first.id, second.id])


async def _count_is(rows: Awaitable[list[Any]], n: int) -> bool:
    return len(await rows) == n


async def test_a_loop_waiting_for_notifications_stops_when_a_notification_and_its_stop_coincide() -> None:
    """Python 3.11's asyncio.wait_for swallowed such a cancellation: the loop ran on and the service's stop
    waited for it until the test timed out (the notifier and orders tests that hung 120 s)."""
    listener = Listener("postgresql://unused.invalid/none", "nowhere")
    turns = 0

    async def loop() -> None:
        nonlocal turns
        while True:
            await listener.wait(10)
            turns += 1

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.01)
    listener.wake()
    task.cancel()
    await asyncio.sleep(0.05)
    assert task.cancelled() and turns == 0
