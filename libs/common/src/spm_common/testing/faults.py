"""Faults a test may inject into the shared servers without disturbing anyone else's connections."""

from __future__ import annotations

import asyncio
import shutil

RABBITMQCTL = shutil.which("rabbitmqctl")


async def _rabbitmqctl(*args: str) -> str:
    if RABBITMQCTL is None:
        raise RuntimeError("rabbitmqctl is not on PATH")
    process = await asyncio.create_subprocess_exec(
        RABBITMQCTL, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {args[0]} failed: {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")


async def drop_broker_connections(name_contains: str, reason: str = "test: connection dropped on purpose") -> int:
    """Close every RabbitMQ connection whose client-provided name contains `name_contains` (a Runtime names
    its connection `spm-<service> <exchange>`, so a world's name picks exactly that world's services), as a
    broker restart would. Returns how many were closed."""
    listing = await _rabbitmqctl("-q", "list_connections", "--no-table-headers", "pid", "client_properties")
    pids = [line.split("\t", 1)[0] for line in listing.splitlines() if name_contains in line]
    await asyncio.gather(*(_rabbitmqctl("-q", "close_connection", pid, reason) for pid in pids))
    return len(pids)


async def broker_connections(name_contains: str) -> int:
    """How many RabbitMQ connections whose client-provided name contains `name_contains` are open."""
    listing = await _rabbitmqctl("-q", "list_connections", "--no-table-headers", "pid", "client_properties", "state")
    return sum(1 for line in listing.splitlines() if name_contains in line and line.rstrip().endswith("running"))


async def wait_for_broker_connections(name_contains: str, count: int, timeout: float = 30) -> None:
    """Wait until `count` such connections are open again (the clients reconnected)."""
    async with asyncio.timeout(timeout):
        while True:  # rabbitmqctl is the only way to see them: poll it
            if await broker_connections(name_contains) >= count:
                return
            await asyncio.sleep(0.2)
