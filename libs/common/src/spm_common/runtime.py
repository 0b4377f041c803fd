"""A service's moving parts in one object: its pool, its broker, its subscription and its outbox relay.

`start` connects (waiting for Postgres and RabbitMQ if they are not up yet), migrates the service's schema,
declares its topology, starts consuming and starts the relay; `stop` undoes it in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncpg
from aiormq.exceptions import AMQPConnectionError
from faststream import FastStream
from faststream.rabbit import RabbitBroker
from faststream.rabbit.schemas import Channel
from faststream.specification import AsyncAPI
from pydantic import BaseModel

from spm_common.consumer import EventConsumer, Handler, Scrub
from spm_common.envelope import CONTENT_TYPE
from spm_common.logging import get_logger
from spm_common.migrations import migrate
from spm_common.outbox import OutboxRelay
from spm_common.redaction import describe_error
from spm_common.settings import ServiceSettings
from spm_common.topology import Topology

log = get_logger(__name__)

BackgroundTask = Callable[["Runtime"], Awaitable[None]]
CONNECT_TIMEOUT_SECONDS = 60.0


class Runtime:
    def __init__(
        self,
        settings: ServiceSettings,
        *,
        migrations: Path,
        handlers: Mapping[str, Handler] | None = None,
        publishes: Mapping[str, type[BaseModel]] | None = None,
        background: Sequence[BackgroundTask] = (),
        description: str = "",
        scrub: Scrub | None = None,
    ) -> None:
        self.settings = settings
        self.migrations = migrations
        self.topology = Topology(settings.exchange, settings.service)
        self.broker = RabbitBroker(
            settings.amqp_url,
            default_channel=Channel(prefetch_count=settings.prefetch),
            logger=None,
            apply_types=False,
            description=description,
        )
        self.consumer = (
            EventConsumer(
                service=settings.service,
                broker=self.broker,
                topology=self.topology,
                handlers=handlers,
                pool=lambda: self.pool,
                max_attempts=settings.max_attempts,
                batch_size=min(settings.consumer_batch, settings.prefetch),
                scrub=scrub,
            )
            if handlers
            else None
        )
        for event_type, schema in (publishes or {}).items():
            # Declared so the AsyncAPI document lists every event the service publishes, with its payload.
            self.broker.publisher(
                event_type, exchange=self.topology.exchange, schema=schema, title=f"{event_type}:publish"
            )
        self._background = background
        self._pool: asyncpg.Pool | None = None
        self.relay: OutboxRelay | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the service has not started")
        return self._pool

    def asyncapi(self) -> FastStream:
        return FastStream(
            self.broker,
            specification=AsyncAPI(title=f"SPM {self.settings.service}", version="1.0.0"),
        )

    async def start(self) -> None:
        dsn = self.settings.role_database_url()
        self._pool = await _retry_until_up(
            "postgres",
            lambda: asyncpg.create_pool(
                dsn,
                min_size=self.settings.db_pool_min,
                max_size=self.settings.db_pool_max,
                server_settings={
                    "search_path": self.settings.db_schema,
                    "application_name": f"spm-{self.settings.service}",
                },
            ),
        )
        async with self.pool.acquire() as conn:
            await migrate(conn, self.settings.db_schema, self.migrations)
        await _retry_until_up("rabbitmq", self.broker.connect)
        await self.topology.declare(
            self.broker, self.consumer.routing_keys if self.consumer else [], self.settings.retry_delay_ms
        )
        if self.consumer:
            self.consumer.start()
        await self.broker.start()
        self.relay = OutboxRelay(
            self.pool,
            dsn,
            self.settings.db_schema,
            self.publish,
            service=self.settings.service,
            batch_size=self.settings.outbox_batch,
            poll_seconds=self.settings.outbox_poll_seconds,
        )
        self._spawn(self.relay.run(), "outbox-relay")
        for task in self._background:
            self._spawn(task(self), getattr(task, "__name__", "background"))
        log.info("service started", port=self.settings.port)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.relay is not None:
            await self.relay.close()
        await self.broker.stop()
        if self.consumer:
            await self.consumer.stop()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        log.info("service stopped")

    async def publish(self, event_type: str, event_id: str, body: bytes) -> Any:
        """Publish one CloudEvent body with CONTRACT section 3's properties; returns once confirmed."""
        return await self.broker.publish(
            body,
            exchange=self.topology.exchange,
            routing_key=event_type,
            persist=True,
            mandatory=False,
            content_type=CONTENT_TYPE,
            message_id=event_id,
            message_type=event_type,
        )

    async def ready(self) -> dict[str, bool]:
        database = False
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                database = await self.pool.fetchval("SELECT true") is True
        broker = False
        with contextlib.suppress(Exception):
            broker = await self.broker.ping(timeout=2)
        return {"database": database, "broker": bool(broker)}

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("background task died", task=name, error=describe_error(exc))
                raise

        self._tasks.append(asyncio.create_task(guarded(), name=name))


async def _retry_until_up(what: str, connect: Callable[[], Awaitable[Any]]) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CONNECT_TIMEOUT_SECONDS
    delay = 0.5
    while True:
        try:
            return await connect()
        except (OSError, TimeoutError, asyncpg.CannotConnectNowError, AMQPConnectionError) as exc:
            if loop.time() >= deadline:
                raise
            log.warning("waiting for dependency", dependency=what, error=describe_error(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
