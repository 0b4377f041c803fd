"""`make run`'s path as real processes: `spm-admin run` starts all five, one message goes through, SIGTERM stops them.

Unlike the walking skeleton (apps in the test process), this runs the console script a user runs, with its
own processes, ports, signal handling and log output, so it proves what `make run` promises (CONTRACT 1).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest
from spm_common.settings import WITH_SCHEMA
from spm_common.testing.smtp import SmtpServer, free_port
from spm_common.testing.world import World

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


def spm_admin() -> str:
    """The console script `make run` calls, from the environment running the tests."""
    found = shutil.which("spm-admin", path=str(Path(sys.executable).parent))
    assert found, "spm-admin is not installed in this environment (uv sync --all-packages)"
    return found


async def wait_until_ready(ports: dict[str, int], process: subprocess.Popen[bytes], output: Path) -> None:
    pending = dict(ports)
    deadline = time.monotonic() + READY_TIMEOUT
    async with httpx.AsyncClient(timeout=2) as client:
        while pending:
            if process.poll() is not None:
                pytest.fail(f"spm-admin run exited with {process.returncode}:\n{output.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"not ready within {READY_TIMEOUT}s: {sorted(pending)}\n{output.read_text()[-4000:]}")
            for service, port in list(pending.items()):
                try:
                    response = await client.get(f"http://127.0.0.1:{port}/readyz")
                except httpx.TransportError:
                    continue
                if response.status_code == 200:
                    del pending[service]
            await asyncio.sleep(0.2)


async def wait_for_row(world: World, query: str, *args: object, timeout: float = 10) -> dict[str, object]:
    conn = await world.admin()
    try:
        deadline = time.monotonic() + timeout
        while True:
            row = await conn.fetchrow(query, *args)
            if row is not None:
                return dict(row)
            if time.monotonic() > deadline:
                raise TimeoutError(query)
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def test_spm_admin_run_serves_a_contact_message_and_stops_cleanly(
    world: World, smtp: SmtpServer, tmp_path: Path
) -> None:
    ports = {service: free_port() for service in WITH_SCHEMA}
    address = f"process-{uuid.uuid4().hex[:8]}@example.com"
    name = f"Thử Nghiệm {uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        **world.env(
            SPM_LOG_FORMAT="json",
            SPM_LOG_LEVEL="info",
            SPM_HTTP_HOST="127.0.0.1",
            **{f"SPM_{service.upper()}_PORT": str(port) for service, port in ports.items()},
        ),
    }
    output = tmp_path / "spm-admin-run.log"
    with output.open("wb") as sink:
        # Its own session, like a terminal's foreground job: the SIGTERM below goes to spm-admin alone,
        # which must pass it on to its five children itself.
        process = subprocess.Popen(
            [spm_admin(), "run"], env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        await wait_until_ready(ports, process, output)

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['contact']}", timeout=5) as client:
            response = await client.post(
                "/v1/messages",
                json={"name": name, "email": address, "subject": "Giấy phép", "message": "Xin chào, tôi cần giúp đỡ."},
            )
        accepted_at = time.monotonic()
        assert response.status_code == 202, response.text
        message_id = response.json()["id"]

        [mail] = await smtp.wait_to(address, timeout=2)
        assert time.monotonic() - accepted_at <= 2.0
        assert mail.message["Message-ID"] == f"<contact-{message_id}@spmgroup.vn>"

        stored = await wait_for_row(world, "SELECT email FROM contact.messages WHERE id = $1::uuid", message_id)
        assert stored["email"] == address
        entry = await wait_for_row(
            world,
            "SELECT payload FROM audit.entries WHERE event_type = 'contact.message.received'"
            " AND payload LIKE '%' || $1 || '%'",
            message_id,
        )
        assert address not in str(entry["payload"])
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        stopping_since = time.monotonic()
        try:
            code = process.wait(timeout=STOP_TIMEOUT + 10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
    stopped_in = time.monotonic() - stopping_since

    log = output.read_text(encoding="utf-8", errors="replace")
    assert code == 0, log[-4000:]
    assert stopped_in < STOP_TIMEOUT, f"stopping took {stopped_in:.1f}s"
    assert "all services stopped" in log
    children = [int(pid) for pid in re.findall(r"started \(pid (\d+)\)", log)]
    assert len(children) == len(WITH_SCHEMA), log[-4000:]
    for pid in children:
        # Each child was waited for, so its pid is gone rather than a zombie or still running.
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    stopped = [orjson.loads(line) for line in log.splitlines() if '"service stopped"' in line]
    assert sorted(entry["service"] for entry in stopped) == sorted(WITH_SCHEMA), log[-4000:]

    # CONTRACT 5.7: not one line of the whole run names the person.
    for line in log.splitlines():
        assert address not in line
        assert address.split("@")[0] not in line
        assert name not in line
        assert name.split()[-1] not in line


async def test_when_one_service_dies_spm_admin_run_stops_the_others_and_fails(world: World, tmp_path: Path) -> None:
    ports = {service: free_port() for service in WITH_SCHEMA}
    env = {
        **os.environ,
        **world.env(SPM_LOG_FORMAT="json", **{f"SPM_{s.upper()}_PORT": str(p) for s, p in ports.items()}),
    }
    output = tmp_path / "spm-admin-run.log"
    # The audit service's port is taken, so it cannot start.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports["audit"]))
        taken.listen()
        with output.open("wb") as sink:
            process = subprocess.Popen(
                [spm_admin(), "run"], env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            code = await asyncio.to_thread(process.wait, READY_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
    log = output.read_text(encoding="utf-8", errors="replace")
    assert code != 0, log[-4000:]
    assert "audit exited with" in log, log[-4000:]
    for pid in (int(pid) for pid in re.findall(r"started \(pid (\d+)\)", log)):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
