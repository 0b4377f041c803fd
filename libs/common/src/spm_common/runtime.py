"""A service's moving parts in one object: its pool, its broker, its subscription and its outbox relay.

`start` connects (waiting for Postgres and RabbitMQ if they are not up yet), migrates the service's schema,
checks its topology (declares it only where it is missing and it may: `Topology.ensure`), starts consuming and
starts the relay (unless `relay=False`: a service may leave its outbox to a relay process of its own, a Runtime
with no handlers); `stop` undoes it in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
from aiormq.exceptions import AMQPConnectionError
from faststream import FastStream
from faststream.rabbit import RabbitBroker
from faststream.rabbit.schemas import Channel
from faststream.specification import AsyncAPI
from pydantic import BaseModel

from spm_common.consumer import EventConsumer, Scrub
from spm_common.envelope import CloudEvent
from spm_common.handlers import Handlers
from spm_common.health import Health
from spm_common.logging import get_logger
from spm_common.migrations import bring_up_to_date
from spm_common.outbox import AmqpPublisher, OutboxRelay
from spm_common.publishers import amqp_login
from spm_common.redaction import describe_error
from spm_common.retention import DeadLetterParking, outbox_purged, purge_inbox
from spm_common.settings import ServiceSettings
from spm_common.topology import Topology

log = get_logger(__name__)

BackgroundTask = Callable[["Runtime"], Awaitable[None]]
# Brings gauges up to date just before /metrics renders them (a cheap query, bounded by SCRAPE_TIMEOUT_SECONDS).
ScrapeHook = Callable[["Runtime"], Awaitable[None]]
SCRAPE_TIMEOUT_SECONDS = 2.0
CONNECT_TIMEOUT_SECONDS = 60.0
# After a broker blip, consumers are blind until the connection is back: seconds, not aio-pika's default 5.
RECONNECT_SECONDS = 2.0
# A broker that accepts a publish but never confirms it (a resource alarm blocks publishers) must not hold
# the relay, and the outbox rows it has locked, forever: the publish fails and the relay backs off.
PUBLISH_TIMEOUT_SECONDS = 10.0
# Stopping must not hang on a broker that is away (cancelling a consumer waits for an answer).
STOP_TIMEOUT_SECONDS = 20.0
TASKS_STOP_TIMEOUT_SECONDS = 60.0
# A background task that raised is started again after 1 s, then 2, 4... up to 30; once it has run a minute
# again without raising, it counts as recovered (`spm_loop_consecutive_failures{loop="task:<name>"}` back to
# 0) and the next failure waits 1 s again.
TASK_RESTART_FIRST_DELAY_SECONDS = 1.0
TASK_RESTART_MAX_DELAY_SECONDS = 30.0
TASK_RECOVERED_AFTER_SECONDS = 60.0


class Runtime:
    def __init__(
        self,
        settings: ServiceSettings,
        *,
        migrations: Path,
        handlers: Handlers | None = None,
        publishes: Mapping[str, type[BaseModel]] | None = None,
        background: Sequence[BackgroundTask] = (),
        scrape: Sequence[ScrapeHook] = (),
        description: str = "",
        scrub: Scrub | None = None,
        accepts: Callable[[CloudEvent], bool] | None = None,
        relay: bool = True,
    ) -> None:
        self.settings = settings
        self.migrations = migrations
        # Every background loop reports here; /readyz and /metrics read it.
        self.health = Health(settings.service)
        self.topology = Topology(settings.exchange, settings.service)
        # The user the broker connection logs in as: every event and copy this service publishes says so
        # (`user_id`, which RabbitMQ validates: spm_common.publishers).
        self.login = amqp_login(settings.role_amqp_url())
        self.broker = RabbitBroker(
            connection_named(settings.role_amqp_url(), f"spm-{settings.service} {settings.exchange}"),
            default_channel=Channel(prefetch_count=settings.prefetch),
            logger=None,
            apply_types=False,
            description=description,
            on_reconnected=[self._broker_reconnected],
            reconnect_interval=RECONNECT_SECONDS,
        )
        self.consumer = (
            EventConsumer(
                service=settings.service,
                broker=self.broker,
                topology=self.topology,
                handlers=handlers,
                pool=lambda: self.pool,
                max_attempts=settings.max_attempts,
                retry_delay_ms=settings.retry_delay_ms,
                batch_size=min(settings.consumer_batch, settings.prefetch),
                linger_ms=settings.consumer_linger_ms,
                scrub=scrub,
                accepts=accepts,
                health=self.health.loop("consumer"),
                login=self.login,
            )
            if handlers
            else None
        )
        for event_type, schema in (publishes or {}).items():
            # Declared so the AsyncAPI document lists every event the service publishes, with its payload.
            self.broker.publisher(
                event_type, exchange=self.topology.existing_exchange, schema=schema, title=f"{event_type}:publish"
            )
        self._background = background
        self._scrape = scrape
        self._runs_relay = relay
        self._pool: asyncpg.Pool | None = None
        self.relay: OutboxRelay | None = None
        self.dead_letters: DeadLetterParking | None = None
        self._publisher = AmqpPublisher(
            self.broker.connect, self.topology.exchange_name, timeout=PUBLISH_TIMEOUT_SECONDS, user_id=self.login
        )
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
                # Connecting is bounded alike: a connection may die half-open before its first answer.
                timeout=self.settings.db_command_timeout_seconds,
                command_timeout=self.settings.db_command_timeout_seconds,
                server_settings={
                    "search_path": self.settings.db_schema,
                    "application_name": f"spm-{self.settings.service}",
                },
                reset=_keep_session,
            ),
        )
        # A migration may take longer than any statement of the running service: a connection of its own.
        await bring_up_to_date(self.settings, self.migrations)
        await _retry_until_up("rabbitmq", self.broker.connect)
        # Declares nothing where `spm-admin bootstrap` did (the service's own broker user may configure nothing).
        await self.topology.ensure(
            self.broker, self.settings.role_amqp_url(), self.consumer.routing_keys if self.consumer else []
        )
        if self.consumer:
            self.consumer.start()
        await self.broker.start()
        if self._runs_relay:
            self.relay = OutboxRelay(
                self.pool,
                dsn,
                self.settings.db_schema,
                self.publish,
                service=self.settings.service,
                batch_size=self.settings.outbox_batch,
                poll_seconds=self.settings.outbox_poll_seconds,
                retention_hours=self.settings.outbox_retention_hours,
                publish_many=self._publisher.publish_many,
                health=self.health.loop("outbox-relay"),
                on_purged=outbox_purged(self.settings.service, self.settings.source),
                purges=[
                    functools.partial(
                        purge_inbox,
                        self.pool,
                        self.settings.inbox_retention_days,
                        service=self.settings.service,
                        source=self.settings.source,
                    )
                ],
            )
            self._spawn(self.relay.run, "outbox-relay")
        if self.consumer:
            self.dead_letters = DeadLetterParking(
                lambda: self.pool,
                self.broker.connect,
                self.topology,
                self.settings.dlq_retention_days,
                service=self.settings.service,
                source=self.settings.source,
                health=self.health.loop("dead-letter-parking"),
            )
            self._spawn(self.dead_letters.run, "dead-letter-parking")
        for task in self._background:
            self._spawn(functools.partial(task, self), getattr(task, "__name__", "background"))
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _log_task_stacks)
        log.info("service started", port=self.settings.port, relay=self._runs_relay)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # Bounded: a task that swallowed its cancellation must not hold the stop (the notifier's sender
            # takes up to the SMTP timeout and a few seconds to hand its work back).
            _, late = await asyncio.wait(self._tasks, timeout=TASKS_STOP_TIMEOUT_SECONDS)
            for task in late:
                # Not `stack`: structlog's renderers take that key for a formatted stack (a string).
                log.error("background task did not stop", task=task.get_name(), awaiting=await_chain(task.get_coro()))
        self._tasks.clear()
        if self.relay is not None:
            await self.relay.close()
        await self._publisher.close()
        try:
            async with asyncio.timeout(STOP_TIMEOUT_SECONDS):
                await self.broker.stop()
        except Exception as exc:
            log.warning("broker did not stop cleanly", error=describe_error(exc))
        if self.consumer:
            try:
                await asyncio.wait_for(self.consumer.stop(), STOP_TIMEOUT_SECONDS)
            except TimeoutError:
                log.warning("consumer did not stop in time")
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), STOP_TIMEOUT_SECONDS)
            except TimeoutError:  # a connection never came back: do not hang the shutdown on it
                log.warning("database pool did not close in time; terminated")
                self._pool.terminate()
            self._pool = None
        log.info("service stopped")

    async def publish(self, event_type: str, event_id: str, body: bytes, routing_key: str | None = None) -> Any:
        """Publish one CloudEvent body with CONTRACT section 3's properties; returns once confirmed."""
        return await self._publisher(event_type, event_id, body, routing_key)

    def _broker_reconnected(self, *_: Any) -> None:
        # Rows that waited while the broker was away go out now, not when the relay's backoff ends.
        log.warning("broker connection re-established")
        if self.relay is not None:
            self.relay.resume()

    async def ready(self) -> dict[str, bool]:
        """Each check of readiness: database and broker reachable, and every health condition (a loop that
        has failed for too long, see `health`) by name; `health.problems()` says why one is false."""
        database = False
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                database = await self.pool.fetchval("SELECT true") is True
        broker = False
        with contextlib.suppress(Exception):
            broker = await self.broker.ping(timeout=2)
        problems = self.health.problems()
        return {"database": database, "broker": bool(broker), **dict.fromkeys(problems, False)}

    async def refresh_metrics(self) -> None:
        """Run the scrape hooks (gauges read from the database at scrape time, not on the hot path)."""
        if self._pool is None:
            return
        tracker = self.health.loop("metrics")
        for hook in self._scrape:
            try:
                async with asyncio.timeout(SCRAPE_TIMEOUT_SECONDS):
                    await hook(self)
                tracker.ok()
            except Exception as exc:  # the gauges keep their last values; the scrape still answers
                tracker.failed(describe_error(exc))

    def _spawn(self, run: Callable[[], Awaitable[None]], name: str) -> None:
        """Run a long-lived task; if it fails, log it and start it again, so a service never stays up
        (and ready) with a part of it silently dead. A task that keeps failing is loud as every loop is
        (spm_common.health): the warning, and the gauges of loop `task:<name>`; each failure a round."""
        tracker = self.health.loop(f"task:{name}")

        async def supervised() -> None:
            delay = TASK_RESTART_FIRST_DELAY_SECONDS
            while True:
                # Run long enough again, the task has recovered: the gauge goes back to 0.
                recovery = (
                    asyncio.get_running_loop().call_later(TASK_RECOVERED_AFTER_SECONDS, tracker.ok)
                    if tracker.failing
                    else None
                )
                try:
                    await run()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    reason = describe_error(exc)
                    log.error("background task failed; restarting it", task=name, error=reason)
                    if not tracker.failing:  # the first failure, or the first since it recovered
                        delay = TASK_RESTART_FIRST_DELAY_SECONDS
                    tracker.failed(reason)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, TASK_RESTART_MAX_DELAY_SECONDS)
                finally:
                    if recovery is not None:
                        recovery.cancel()

        self._tasks.append(asyncio.create_task(supervised(), name=name))


async def _keep_session(_: asyncpg.Connection) -> None:
    """Replaces asyncpg's reset of a connection returned to the pool, one more round trip on every release
    (`pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`). The services leave no session state on
    pooled connections: settings are `SET LOCAL`, LISTEN has a connection of its own, the migration lock is
    released by the migration. asyncpg still rolls back a transaction left open before calling this."""


def _log_task_stacks() -> None:
    """SIGUSR1: log where every task of the process is waiting, for an operator chasing a stall."""
    for task in asyncio.all_tasks():
        log.warning("task stack", task=task.get_name(), stack=await_chain(task.get_coro()))


def await_chain(awaitable: object) -> list[str]:
    """Where a suspended coroutine waits, outermost first, down to the innermost awaited object.
    (`Task.get_stack` shows only the outermost frame of a suspended task; wrappers such as a future's
    iterator or a compiled coroutine's are looked through with the garbage collector's referents.)"""
    chain: list[str] = []
    while awaitable is not None and len(chain) < 40:
        frame = (
            getattr(awaitable, "cr_frame", None)
            or getattr(awaitable, "gi_frame", None)
            or getattr(awaitable, "ag_frame", None)
        )
        if frame is not None:
            chain.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        elif isinstance(awaitable, asyncio.Future):
            chain.append(repr(awaitable)[:300])
            break
        else:
            chain.append(getattr(awaitable, "__qualname__", type(awaitable).__name__))
        inner = (
            getattr(awaitable, "cr_await", None)
            or getattr(awaitable, "gi_yieldfrom", None)
            or getattr(awaitable, "ag_await", None)
        )
        if inner is None:
            inner = next((r for r in gc.get_referents(awaitable) if _awaitable(r)), None)
        awaitable = inner
    return chain


def _awaitable(value: object) -> bool:
    return isinstance(value, asyncio.Future) or any(
        hasattr(value, name) for name in ("cr_await", "gi_yieldfrom", "ag_await")
    )


def connection_named(amqp_url: str, name: str) -> str:
    """The URL with a client-provided connection name (RabbitMQ shows it to operators), unless it has one."""
    parts = urlsplit(amqp_url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(key == "name" for key, _ in query):
        return amqp_url
    return urlunsplit(parts._replace(query=urlencode([*query, ("name", name)])))


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
