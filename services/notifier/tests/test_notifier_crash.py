"""A notifier killed (SIGKILL) in the middle of a batch and started again sends every e-mail, and none twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import httpx
from notifier_helpers import address, request_event
from spm_common.testing.smtp import SmtpServer, free_port
from spm_common.testing.world import World


def start_notifier(world: World, port: int, **extra: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **world.env(
            SPM_NOTIFIER_PORT=str(port),
            SPM_NOTIFIER_LEASE_SECONDS="2",
            SPM_NOTIFIER_POLL_SECONDS="0.1",
            SPM_NOTIFIER_SMTP_CONNECTIONS="4",
            SPM_NOTIFIER_RETRY_BASE_SECONDS="0.2",
            SPM_LOG_LEVEL="warning",
            **extra,
        ),
    }
    return subprocess.Popen([sys.executable, "-m", "notifier"], env=env, stdout=subprocess.DEVNULL)


async def wait_ready(port: int, child: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            assert child.poll() is None, "the notifier exited"
            try:
                if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError("the notifier did not become ready")


async def test_killed_mid_batch_and_restarted_sends_no_duplicate(world: World, publish, db, smtp: SmtpServer) -> None:
    recipients = [address(f"crash{i}") for i in range(40)]
    events = [request_event("contact-ack", to) for to in recipients]
    port = free_port()
    # Slow enough that the kill lands while the batch is under way.
    first = start_notifier(world, port, SPM_NOTIFIER_RATE_LIMIT="25")
    try:
        await wait_ready(port, first)
        await publish(*events)
        await smtp.wait_for(lambda ms: sum(any(to in m.rcpt_tos for to in recipients) for m in ms) >= 10, timeout=20)
        # Hold new transactions before any message could be accepted (RCPT), let what was accepted be recorded,
        # then kill: what is left is leased to a dead process, or waiting.
        smtp.stall_rcpt_seconds = 3.0
        await asyncio.sleep(0.5)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    smtp.stall_rcpt_seconds = 0.0
    statuses = await db.fetch(
        "SELECT status, count(*) AS n FROM notifier.deliveries WHERE request_event_id = ANY($1) GROUP BY status",
        [e.id for e in events],
    )
    left = {row["status"]: row["n"] for row in statuses}
    assert left.get("sent", 0) >= 10 and sum(n for s, n in left.items() if s != "sent") > 0, left

    second = start_notifier(world, port)
    try:
        await wait_ready(port, second)
        await smtp.wait_for(lambda ms: all(any(to in m.rcpt_tos for m in ms) for to in recipients), timeout=30)
        await asyncio.sleep(1.0)
    finally:
        second.terminate()
        second.wait(timeout=20)
    assert second.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a clean stop
    assert [len(smtp.to(to)) for to in recipients] == [1] * len(recipients)
    sent = await db.fetchval(
        "SELECT count(*) FROM notifier.deliveries WHERE request_event_id = ANY($1) AND status = 'sent'",
        [e.id for e in events],
    )
    assert sent == len(recipients)
