"""pytest fixtures for every test of the repository (loaded with `-p spm_common.testing.plugin`).

Policy: unit tests use no fixture here; integration and end-to-end tests use `world` (a database and an
exchange of their own on the real Postgres and RabbitMQ, destroyed afterwards) and `smtp` (a real SMTP
server in the test process). Nothing is mocked that a test claims to prove.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator

import pytest

from spm_common.runtime import await_chain
from spm_common.testing.smtp import SmtpServer
from spm_common.testing.world import World, new_world


@pytest.fixture(scope="session")
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def world(smtp: SmtpServer) -> AsyncIterator[World]:
    instance = new_world()
    instance.smtp_port = smtp.port
    await instance.create()
    yield instance
    await instance.destroy()


@pytest.fixture(autouse=True)
def _reset_smtp_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "smtp" in request.fixturenames:
        server: SmtpServer = request.getfixturevalue("smtp")
        server.reply_for_rcpt = server.reply_for_data = None
        server.stall_seconds = server.stall_rcpt_seconds = 0.0
        server.come_back()


@pytest.fixture(autouse=True)
async def _where_a_stalled_test_waits(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Shortly before pytest-timeout ends a test, print where each asyncio task waits: the timeout's own
    traceback shows only the event loop waiting in select()."""
    marker = request.node.get_closest_marker("timeout")
    try:
        timeout = float(marker.args[0]) if marker and marker.args else float(request.config.getini("timeout"))
    except (TypeError, ValueError):
        timeout = 0.0
    if timeout <= 10:
        yield
        return
    handle = asyncio.get_running_loop().call_later(timeout - 5, _print_tasks, request.node.nodeid)
    try:
        yield
    finally:
        handle.cancel()


def _print_tasks(test: str) -> None:
    print(f"{test} is about to time out; its tasks wait here:", file=sys.stderr)
    for task in asyncio.all_tasks():
        places = [f"    {place}" for place in await_chain(task.get_coro())]
        print(f"  {task.get_name()}:", *places, sep="\n", file=sys.stderr)
