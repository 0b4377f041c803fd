"""A throwaway world for one test session: its own database, exchange and queues on the real servers."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aio_pika
import asyncpg
import httpx
import uvicorn
from fastapi import FastAPI

from spm_common.bootstrap import ensure_database, ensure_roles, with_database
from spm_common.settings import SERVICES, WITH_SCHEMA, ServiceSettings, from_environment
from spm_common.topology import Topology

S = TypeVar("S", bound=ServiceSettings)
ADMIN_URL = from_environment("SPM_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_URL = from_environment("SPM_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
# RabbitMQ's management API with an administrator's login: tests make RabbitMQ users through it.
MANAGEMENT_URL = from_environment("SPM_TEST_RABBITMQ_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672")
# At least 32 characters, as every operator token must be (and as production wants every secret).
OPERATOR_TOKEN = "test-operator-token-of-32-characters-at-least"
WEBHOOK_SECRET = "test-webhook-secret-of-32-characters-at-least"


@dataclass
class World:
    name: str
    smtp_port: int = 1025
    exchanges: set[str] = field(default_factory=set)

    @property
    def database_url(self) -> str:
        return with_database(ADMIN_URL, self.name)

    @property
    def exchange(self) -> str:
        return f"{self.name}.events"

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a service process in this world."""
        values = {
            "SPM_DATABASE_URL": self.database_url,
            "SPM_AMQP_URL": AMQP_URL,
            "SPM_EXCHANGE": self.exchange,
            "SPM_SMTP_HOST": "127.0.0.1",
            "SPM_SMTP_PORT": str(self.smtp_port),
            "SPM_OPERATOR_TOKEN": OPERATOR_TOKEN,
            "SPM_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "SPM_RETRY_DELAY_MS": "300",
            "SPM_MAX_ATTEMPTS": "3",
            "SPM_OUTBOX_POLL_SECONDS": "0.5",
            # The test Postgres is shared (max_connections 100) by every session running at once: a service
            # holds at most its pool and one or two LISTEN connections, so four services about 28 at most.
            "SPM_DB_POOL_MAX": "5",
            # Every test of a session posts from the same few addresses; tests of the limits set their own.
            "SPM_CONTACT_RATE_PER_CLIENT": "1000000",
            "SPM_CONTACT_RATE_GLOBAL": "1000000",
            # Tests of the operator endpoints send wrong tokens on purpose, to apps that live all session.
            "SPM_OPERATOR_AUTH_FAILURES": "10000",
        }
        values.update(extra)
        return values

    def settings(self, cls: type[S], **overrides: Any) -> S:
        env = {k.removeprefix("SPM_").lower(): v for k, v in self.env().items()}
        env.update(overrides)
        exchange = str(env["exchange"])
        self.exchanges.add(exchange)
        return cls(**env)  # type: ignore[arg-type]  # settings from strings, as from the environment

    async def admin(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.database_url)

    async def create(self) -> None:
        await ensure_database(self.database_url)
        await ensure_roles(self.database_url, dict.fromkeys(WITH_SCHEMA))
        self.exchanges.add(self.exchange)

    async def destroy(self) -> None:
        conn = await asyncpg.connect(ADMIN_URL)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            await conn.close()
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            for exchange in self.exchanges:
                for service in SERVICES:
                    topology = Topology(exchange, service)
                    for queue in (
                        topology.queue_name,
                        topology.retry_queue_name,
                        topology.dead_letter_queue_name,
                    ):
                        channel = await connection.channel()
                        with contextlib.suppress(Exception):
                            await channel.queue_delete(queue)
                    channel = await connection.channel()
                    with contextlib.suppress(Exception):
                        await channel.exchange_delete(topology.requeue_exchange_name)
                for name in (exchange, f"{exchange}.dlx"):
                    channel = await connection.channel()
                    with contextlib.suppress(Exception):
                        await channel.exchange_delete(name)


def new_world() -> World:
    return World(name=f"spm_test_{uuid.uuid4().hex[:10]}")


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan (broker, relay, consumers) running, and an HTTP client into it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """The app served by uvicorn on a free local port, as in production (lifespan, keep-alive connections,
    what uvicorn does with an error), for tests that need a real HTTP server; yields its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()  # start-up failed: its error, not a wait that never ends
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await task
