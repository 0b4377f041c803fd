"""The fault suite's machinery: the four services as real processes, faults to inject, and the counts.

Everything here talks to real servers: the services run as separate processes (`python -m <service>`)
against the test world's database and exchange, mail goes to the in-process SMTP server, and faults are
real (broker connections dropped or the broker stopped, Postgres backends terminated, SIGKILL, SMTP
refusing, a TCP proxy that slows and cuts connections).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from spm_common.settings import SERVICES
from spm_common.testing.smtp import SmtpServer, free_port
from spm_common.testing.world import OPERATOR_TOKEN, World
from spm_common.topology import Topology


class ServiceProcess:
    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.env = {**os.environ, **env, f"SPM_{name.upper()}_PORT": str(self.port), "SPM_LOG_FORMAT": "json"}
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.name], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )

    async def kill(self, sig: int = signal.SIGKILL, grace: float = 20) -> None:
        """Signal the process and wait for it without blocking the loop (the proxies run on it)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        deadline = time.monotonic() + grace
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                self.process.kill()
            await asyncio.sleep(0.05)

    async def wait_ready(self, timeout: float = 60) -> float:
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log_path}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.url}/readyz")).status_code == 200:
                        return time.monotonic() - started
                if time.monotonic() - started > timeout:
                    raise TimeoutError(f"{self.name} not ready after {timeout}s; see {self.log_path}")
                await asyncio.sleep(0.1)


class TcpProxy:
    """A TCP proxy that can add latency to every chunk and cut every open connection."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.delay = 0.0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def stop(self) -> None:
        self.cut()
        if self._server:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update({writer, up_writer})
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True)
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self.delay:
                    await asyncio.sleep(self.delay)
                writer.write(data)
                await writer.drain()
        finally:
            # However one side ends, at its end of data or reset (a terminated Postgres backend resets its
            # socket when a query was on its way), the other side is closed too. Left open, the client
            # would wait for an answer forever: a half-open connection no real server leaves behind.
            writer.close()


@dataclass
class System:
    world: World
    smtp: SmtpServer
    log_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    # Every service reaches the broker and the database through these, so a scenario can slow or cut them.
    broker_proxy: TcpProxy = field(default_factory=lambda: TcpProxy("127.0.0.1", 5672))
    database_proxy: TcpProxy = field(default_factory=lambda: TcpProxy("127.0.0.1", 5432))

    def env_for(self, name: str) -> dict[str, str]:
        database = self.world.database_url.replace(":5432/", f":{self.database_proxy.port}/")
        return self.world.env(
            SPM_RETRY_DELAY_MS="1000",
            SPM_MAX_ATTEMPTS="10",
            # SMTP retries in seconds rather than the production half-minute, so a scenario settles quickly.
            SPM_NOTIFIER_RETRY_BASE_SECONDS="1",
            SPM_NOTIFIER_RETRY_MAX_SECONDS="5",
            # And more tries, so the retries span minutes, well past the SMTP scenario's 35 s outage, as the
            # production backoff's hours span any outage it is meant for (10 tries of at most 5 s did not).
            SPM_NOTIFIER_MAX_ATTEMPTS="30",
            # A killed notifier's claims are taken over after this lease (production: 120 s).
            SPM_NOTIFIER_LEASE_SECONDS="5",
            SPM_AMQP_URL=f"amqp://guest:guest@127.0.0.1:{self.broker_proxy.port}/",
            SPM_DATABASE_URL=database,
            **self.extra_env,
        )

    async def start(self, names: tuple[str, ...] = SERVICES) -> None:
        await self.broker_proxy.start()
        await self.database_proxy.start()
        for name in names:
            self.services[name] = ServiceProcess(name, self.env_for(name), self.log_dir)
            self.services[name].start()
        await asyncio.gather(*(self.services[n].wait_ready() for n in names))

    async def restart(self, name: str, env: dict[str, str] | None = None) -> float:
        old = self.services[name]
        await old.kill(signal.SIGTERM)
        new = ServiceProcess(name, env or self.env_for(name), self.log_dir)
        new.port = old.port
        new.env[f"SPM_{name.upper()}_PORT"] = str(old.port)
        self.services[name] = new
        new.start()
        return await new.wait_ready()

    async def stop(self) -> None:
        await asyncio.gather(*(s.kill(signal.SIGTERM) for s in self.services.values()), return_exceptions=True)
        await self.broker_proxy.stop()
        await self.database_proxy.stop()

    def url(self, name: str) -> str:
        return self.services[name].url


OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


async def settle(check: Callable[[], Awaitable[bool]], timeout: float) -> float:
    """Wait until `check()` holds (polled: the counts are the only signal); return how long it took."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"the system did not settle in {timeout}s")
        await asyncio.sleep(0.5)
    return time.monotonic() - started


async def run_command(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    if process.returncode:
        raise RuntimeError(f"{args[0]} failed: {stderr.decode(errors='replace')[:500]}")
    return stdout.decode(errors="replace")


async def unacknowledged(queue: str) -> int:
    """Deliveries of `queue` a consumer holds without having acknowledged them (only the broker knows)."""
    listing = await run_command(
        "rabbitmqctl", "-q", "list_queues", "--no-table-headers", "name", "messages_unacknowledged"
    )
    for line in listing.splitlines():
        name, _, count = line.rpartition("\t")
        if name == queue:
            return int(count)
    return 0


@asynccontextmanager
async def holding_messages(system: System, service: str, timeout: float = 30) -> AsyncIterator[int]:
    """Keep `service` in the middle of a batch, holding deliveries it has not acknowledged: its inbox is
    locked (every consumer transaction first records its events there), so the batch in hand waits, and the
    broker keeps delivering up to the prefetch. Yields how many it holds, once the broker says it holds some."""
    queue = Topology(system.world.exchange, service).queue_name
    conn = await system.world.admin()
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL lock_timeout = '10s'")
            await conn.execute(f"LOCK TABLE {service}.inbox IN SHARE MODE")
            deadline = time.monotonic() + timeout
            held = 0
            while held == 0:
                # Cheap to watch: the service's batch waiting for the lock; then the broker's word for it.
                while not await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND usename = $2"
                    " AND wait_event_type = 'Lock'",
                    system.world.name,
                    f"spm_{service}",
                ):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{service} took no delivery within {timeout}s")
                    await asyncio.sleep(0.1)
                held = await unacknowledged(queue)
                if held == 0 and time.monotonic() > deadline:
                    raise TimeoutError(f"the broker saw no unacknowledged delivery of {service} in {timeout}s")
            yield held
    finally:
        await conn.close()
