"""Audit benchmark: trail entries appended per second from events published to the exchange, and page views
ingested per second through POST /v1/pageviews and as `site.page.viewed` events, each against a real audit
process and beside a plain asyncpg COPY of the same rows in the same run (the ceiling).

    uv run python -m bench.audit [--quick] [--events N] [--views N] [--view-events N] [--connections C]
        [--replicas R] [--log-level L]

Beside each rate it prints the CPU time the audit process(es) spent per entry or view (utime + stime from
/proc), which is far steadier than the rate on a shared machine.

It makes its own database and exchange (like the tests' world) and removes them at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time

import asyncpg
import orjson
from audit import trail
from spm_common.envelope import CloudEvent, new_event
from spm_common.testing.smtp import free_port
from spm_common.testing.world import AMQP_URL, World, new_world

from bench._proc import cpu_seconds
from bench._publisher import publish_bodies

BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
PAGES = ["/", "/dict", "/dict/pro", "/buy", "/support", "/news/2026-12", "/download", "/about"]


def order_event(i: int) -> CloudEvent:
    """An event shaped like the busiest real ones: a purchaser to pseudonymise, items, a card to mask."""
    return new_event(
        "order.placed",
        "urn:bench:shop",
        {
            "order_id": f"FS-BENCH-{i:07d}",
            "placed_at": "2026-11-29T03:59:12Z",
            "currency": "USD",
            "total": "49.00",
            "purchaser": {
                "name": "Nguyễn Văn Thử",
                "email": f"buyer-{i}@example.vn",
                "phone": "+84 912 345 678",
                "address": {"line1": "12 Tràng Tiền", "city": "Hà Nội", "postal_code": "100000", "country": "VN"},
                "locale": "vi",
            },
            "items": [
                {"sku": "SPM-DICT-PRO", "product_name": "SPM Dictionary Pro", "quantity": 1, "unit_price": "49.00"}
            ],
            "marketing_consent": i % 2 == 0,
        },
    )


def view_event(i: int) -> CloudEvent:
    return new_event(
        "site.page.viewed",
        "urn:bench:access-log",
        {
            "url": f"https://spmgroup.vn{PAGES[i % len(PAGES)]}?utm_source=bench",
            "referrer": "https://www.example.com/search?q=spm",
            "client_address": address(i),
            "user_agent": BROWSER,
        },
    )


def address(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


async def publish(events: list[CloudEvent], exchange_name: str) -> float:
    """Publish with confirms, windows of messages pipelined (bench._publisher); returns the seconds it took."""
    bodies = [(e.type, e.id, e.to_json()) for e in events]
    started = time.perf_counter()
    await publish_bodies(AMQP_URL, exchange_name, bodies)
    return time.perf_counter() - started


async def wait_until(admin: asyncpg.Connection, query: str, target: int, timeout: float) -> float:
    deadline = time.perf_counter() + timeout
    while True:
        value = await admin.fetchval(query)
        if value >= target:
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{value} of {target} after {timeout}s")
        await asyncio.sleep(0.02)


async def copy_ceiling(admin: asyncpg.Connection, table: str, where: str, columns: list[str]) -> tuple[int, float]:
    """COPY the same rows into a scratch table of the same shape: the ceiling of what Postgres takes."""
    rows = await admin.fetch(f"SELECT {', '.join(columns)} FROM audit.{table} WHERE {where}")
    records = [tuple(r) for r in rows]
    await admin.execute(f"CREATE TABLE IF NOT EXISTS public.bench_{table} (LIKE audit.{table} INCLUDING ALL)")
    await admin.execute(f"TRUNCATE public.bench_{table}")
    started = time.perf_counter()
    await admin.copy_records_to_table(f"bench_{table}", schema_name="public", records=records, columns=columns)
    return len(records), time.perf_counter() - started


async def post_views(ports: list[int], total: int, connections: int) -> float:
    """Keep-alive HTTP/1.1 clients written on bare sockets (a Python HTTP library would be the bottleneck)."""
    counter = iter(range(total))

    async def client(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in counter:
                body = orjson.dumps(
                    {
                        "url": f"https://spmgroup.vn{PAGES[i % len(PAGES)]}?ref={i}",
                        "referrer": "https://www.example.com/",
                    }
                )
                writer.write(
                    b"POST /v1/pageviews HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    + f"User-Agent: {BROWSER}\r\nX-Forwarded-For: {address(i)}\r\n".encode()
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 202"):
                    raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(ports[n % len(ports)]) for n in range(connections)))
    return time.perf_counter() - started


async def wait_ready(port: int, process: asyncio.subprocess.Process, timeout: float = 60) -> None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if process.returncode is not None:
            raise RuntimeError(f"the audit service exited with {process.returncode}")
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = await reader.read()
            writer.close()
            if answer.startswith(b"HTTP/1.1 200"):
                return
        await asyncio.sleep(0.2)
    raise TimeoutError("the audit service did not become ready")


def line(
    what: str,
    count: int,
    seconds: float,
    cpu: float | None = None,
    ceiling: tuple[int, float] | None = None,
    batches: int | None = None,
) -> None:
    text = f"  {what:<54} {count:>7} in {seconds:6.2f}s = {count / seconds:8.0f}/s"
    if cpu is not None:
        text += f"   audit CPU {cpu * 1e6 / count:5.0f} µs each"
    if batches:
        text += f"   {count / batches:5.1f} entries a transaction"
    if ceiling:
        text += f"   (COPY ceiling: {ceiling[0] / ceiling[1]:9.0f}/s)"
    print(text, flush=True)


async def appends(admin: asyncpg.Connection, after_seq: int) -> int:
    """How many transactions appended the entries after `after_seq` (an append's entries share `recorded_at`)."""
    return int(await admin.fetchval("SELECT count(DISTINCT recorded_at) FROM audit.entries WHERE seq > $1", after_seq))


class Replicas:
    """N audit processes of one world, each on its own port, consuming the same queue."""

    def __init__(self, world: World, count: int, log_level: str) -> None:
        self.ports = [free_port() for _ in range(count)]
        self.envs = [
            {
                **os.environ,
                **world.env(
                    SPM_AUDIT_PORT=str(port),
                    SPM_LOG_LEVEL=log_level,
                    SPM_TRUSTED_PROXIES="127.0.0.1/32",
                    SPM_AUDIT_CHECKPOINT_SECONDS="3600",
                ),
            }
            for port in self.ports
        ]
        self.processes: list[asyncio.subprocess.Process] = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def cpu(self) -> float:
        return cpu_seconds(*self.pids)

    async def start(self) -> None:
        for env in self.envs:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "audit", env=env, stdout=subprocess.DEVNULL
            )
            self.processes.append(process)
        await asyncio.gather(*(wait_ready(port, p) for port, p in zip(self.ports, self.processes, strict=True)))

    def signal(self, signum: int) -> None:
        for process in self.processes:
            process.send_signal(signum)

    async def stop(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.terminate()
        for process in self.processes:
            try:
                await asyncio.wait_for(process.wait(), timeout=15)
            except TimeoutError:
                process.kill()
        self.processes = []


ENTRY_COLUMNS = list(trail.COLUMNS)
VIEW_COLUMNS = ["viewed_at", "path", "referrer_host", "visitor_hash"]
HEAD = "SELECT seq FROM audit.chain_head"


async def run(events: int, views: int, view_events: int, connections: int, replicas: int, log_level: str) -> None:
    world: World = new_world()
    await world.create()
    audit = Replicas(world, replicas, log_level)
    await audit.start()
    admin = await world.admin()
    try:
        print(
            f"audit benchmark: {os.cpu_count()} cores, {replicas} audit process(es), log level {log_level},"
            f" load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; CPU is of the audit process(es)"
        )

        # 1. The trail: order.placed events published to the exchange, until every one is an entry.
        batch = [order_event(i) for i in range(events)]
        base = await admin.fetchval(HEAD)
        cpu, started = audit.cpu(), time.perf_counter()
        publishing = asyncio.create_task(publish(batch, world.exchange))
        done = await wait_until(admin, HEAD, base + events, timeout=600)
        cpu = audit.cpu() - cpu
        published_in = await publishing
        ceiling = await copy_ceiling(admin, "entries", "event_type = 'order.placed'", ENTRY_COLUMNS)
        batches = await appends(admin, base)
        line("trail: events published -> entries appended", events, done - started, cpu, ceiling, batches)
        line("  (publishing alone, with confirms)", events, published_in)
        verify_started = time.perf_counter()
        await admin.execute("SET search_path TO audit")
        outcome = await trail.verify(admin, full=True)
        line(f"  full verification (ok={outcome.ok})", outcome.checked, time.perf_counter() - verify_started)

        # 1b. The same with the publisher out of the way: a backlog published while the service is paused
        # (SIGSTOP), timed from SIGCONT to the last entry: the consumer's own rate.
        audit.signal(signal.SIGSTOP)
        backlog = [order_event(events + i) for i in range(events)]
        await publish(backlog, world.exchange)
        base = await admin.fetchval(HEAD)
        cpu, started = audit.cpu(), time.perf_counter()
        audit.signal(signal.SIGCONT)
        done = await wait_until(admin, HEAD, base + events, timeout=600)
        cpu = audit.cpu() - cpu
        batches = await appends(admin, base)
        line("trail: a backlog in the queue -> entries appended", events, done - started, cpu, None, batches)

        # 2. Page views through the HTTP beacon: every 202 means stored (group commit).
        cpu = audit.cpu()
        seconds = await post_views(audit.ports, views, connections)
        cpu = audit.cpu() - cpu
        stored = await admin.fetchval("SELECT count(*) FROM audit.pageviews")
        ceiling = await copy_ceiling(admin, "pageviews", "true", VIEW_COLUMNS)
        line(f"page views: POST /v1/pageviews, {connections} connections", views, seconds, cpu, ceiling)
        if stored != views:
            print(f"  !! {stored} page views stored for {views} accepted")

        # 3. Page views as events from the log shipper (each is also a trail entry).
        if view_events:
            batch = [view_event(i) for i in range(view_events)]
            cpu, started = audit.cpu(), time.perf_counter()
            publishing = asyncio.create_task(publish(batch, world.exchange))
            done = await wait_until(admin, "SELECT count(*) FROM audit.pageviews", views + view_events, timeout=600)
            cpu = audit.cpu() - cpu
            await publishing
            line("page views: site.page.viewed events (+ trail entries)", view_events, done - started, cpu)
        if replicas > 1:
            await admin.execute("SET search_path TO audit")
            outcome = await trail.verify(admin, full=True)
            print(f"  chain after {replicas} replicas: ok={outcome.ok}, {outcome.checked} entries")
    finally:
        await audit.stop()
        await admin.close()
        await world.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--views", type=int, default=30_000)
    parser.add_argument("--view-events", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--replicas", type=int, default=1, help="audit processes (an operator's way to scale)")
    parser.add_argument("--log-level", default="warning", help="the services' SPM_LOG_LEVEL (info: access lines)")
    args = parser.parse_args()
    if args.quick:
        args.events, args.views, args.view_events, args.connections = 1000, 1000, 500, 16
    asyncio.run(run(args.events, args.views, args.view_events, args.connections, args.replicas, args.log_level))


if __name__ == "__main__":
    main()
